import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from shared.errors import MissingData
from shared.store import Store


def test_write_read_and_completion(tmp_path):
    store = Store(tmp_path / "s.zarr")
    xyz = np.random.default_rng(0).random((100, 3), dtype=np.float32)
    assert store.write("scene0", "points", {"xyz": xyz}, {"key": "k1"})
    assert store.scenes() == ["scene0"]
    assert store.is_complete("scene0", "points", "k1")
    assert not store.is_complete("scene0", "points", "k2")
    np.testing.assert_array_equal(store.read("scene0", "points")["xyz"], xyz)
    # a second writer of the same output loses the race and leaves no trace
    assert not store.write("scene0", "points", {"xyz": xyz}, {"key": "k1"})
    assert [p.name for p in (tmp_path / "s.zarr" / "scene0").iterdir() if p.name.startswith(".tmp")] == []


def test_not_a_store(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        Store(tmp_path / "x")


def test_missing_output_error(tmp_path):
    store = Store(tmp_path / "s.zarr")
    with pytest.raises(MissingData, match=r"scene0/points is missing or incomplete; run `python -m preprocess run`"):
        store.read("scene0", "points")


def test_killed_writer_leaves_nothing_trusted(tmp_path):
    """SIGKILL a real process in the middle of a large stage write."""
    path = tmp_path / "s.zarr"
    Store(path)
    script = textwrap.dedent(
        f"""
        import numpy as np, sys
        from shared.store import Store
        store = Store({str(path)!r})
        arrays = {{f"a{{i}}": np.zeros((2_000_000,), np.float32) for i in range(400)}}
        print("writing", flush=True)
        store.write("scene0", "partitions/x-1", arrays, {{"key": "1"}})
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "writing"
    tmp_dirs = []
    deadline = time.time() + 60
    while time.time() < deadline and not tmp_dirs:  # wait until it is mid-write
        tmp_dirs = list((path / "scene0" / "partitions").glob(".tmp-*")) if (path / "scene0" / "partitions").exists() else []
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tmp_dirs, "the writer never started writing"
    store = Store(path)
    assert not store.is_complete("scene0", "partitions/x-1")
    assert store.outputs("scene0", "partitions") == []
    assert store.clean_temporaries() == 1
    # a later run writes it properly
    assert store.write("scene0", "partitions/x-1", {"segment": np.arange(5, dtype=np.int32)}, {"key": "1"})
    assert store.outputs("scene0", "partitions") == ["x-1"]


def test_json_updates_merge_under_the_lock(tmp_path):
    store = Store(tmp_path / "s.zarr")
    assert store.read_json("m.json") is None
    store.update_json("m.json", lambda d: {"n": 1})
    store.update_json("m.json", lambda d: {"n": d["n"] + 1})
    assert store.read_json("m.json") == {"n": 2}
    assert [p.name for p in (tmp_path / "s.zarr").glob(".tmp-*")] == []
