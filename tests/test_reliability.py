"""Reliability of preprocessing at scale, with real processes: a `dask scheduler` and two
`dask worker`s on loopback give the inline run's store; a worker SIGKILLed mid-write has its
task run again elsewhere; a killed `python -m preprocess run` resumes doing only the unfinished
work; two runs on one store at once neither corrupt nor undo each other.

To kill or race at a known point, every process a test starts imports a `sitecustomize` hook
(through PYTHONPATH) that can pause chosen store writes after their arrays are written and
before they are marked complete, and leaves a marker file naming the process and the output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import PIPELINE

from preprocess import stages
from preprocess.synth import generate
from preprocess.pipeline import run
from shared.config import load_pipeline
from shared.store import POINTS, Store

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENES = [f"scene{i:04d}_00" for i in range(4)]


HOOK = '''
"""Test hook of tests/test_reliability.py (inactive unless HICL_TEST_MARKS is set)."""
import json, os, time
from pathlib import Path

if os.environ.get("HICL_TEST_MARKS"):
    import shared.store as _store

    _marks = Path(os.environ["HICL_TEST_MARKS"])
    _slow = os.environ.get("HICL_TEST_SLOW", "")  # group prefix whose writes pause mid-write
    _delay = float(os.environ.get("HICL_TEST_DELAY", "0"))
    _wait_for = os.environ.get("HICL_TEST_WAIT_FOR", "")  # pause until this file exists
    _once = bool(os.environ.get("HICL_TEST_ONCE"))
    _cleaned = os.environ.get("HICL_TEST_CLEANED", "")  # touched after clean_temporaries
    _write, _json_safe, _clean = _store.Store.write, _store._json_safe, _store.Store.clean_temporaries
    _where, _paused = [], []

    def write(self, scene, group, arrays, attrs):
        _where[:] = [group, scene]
        return _write(self, scene, group, arrays, attrs)

    def json_safe(value):
        # called with the final attributes once the arrays sit in the temporary group
        if (_slow and isinstance(value, dict) and value.get("complete") is True
                and _where and _where[0].startswith(_slow) and not (_once and _paused)):
            _paused.append(1)
            _marks.mkdir(parents=True, exist_ok=True)
            mark = {"pid": os.getpid(), "group": _where[0], "scene": _where[1]}
            (_marks / f"write-{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(mark))
            deadline = time.time() + 60
            while _wait_for and not Path(_wait_for).exists() and time.time() < deadline:
                time.sleep(0.02)
            time.sleep(_delay)
        return _json_safe(value)

    def clean_temporaries(self):
        n = _clean(self)
        if _cleaned:
            Path(_cleaned).write_text(str(n))
        return n

    _store.Store.write, _store._json_safe, _store.Store.clean_temporaries = write, json_safe, clean_temporaries
'''


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, scenes=len(SCENES), seed=5, resolution=0.12, frames=8, width=160, height=120)
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset) -> dict[str, np.ndarray]:
    """The store of a clean inline run, array by array."""
    tmp = tmp_path_factory.mktemp("reference")
    summary = run(load_pipeline(pipeline_file(tmp, dataset, tmp / "s.zarr")), scheduler="inline", progress=False)
    assert not summary.failures, summary.describe()
    return snapshot(tmp / "s.zarr")


@pytest.fixture
def hook_env(tmp_path) -> dict[str, str]:
    """Environment for subprocesses: the test hook and this repository on PYTHONPATH, markers under tmp_path."""
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HICL_TEST_", "DASK_"))}
    # the repository under test, not whatever checkout the environment has installed (a worktree's workers)
    path = os.pathsep.join([str(folder), str(REPO)])
    return env | {"PYTHONPATH": path, "HICL_TEST_MARKS": str(tmp_path / "marks"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def processes():
    """Start subprocesses in their own process groups; all are killed at teardown."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, cwd=REPO, start_new_session=True, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        try:  # the group: a nanny's worker, a local cluster's workers
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def pipeline_file(tmp: Path, root: Path, store: Path) -> Path:
    path = tmp / "pipeline.toml"
    path.write_text(PIPELINE.format(root=root, store=store, k=0.01))
    return path


def snapshot(store_path: Path) -> dict[str, np.ndarray]:
    """Every array of every complete output, by scene/group/name."""
    store = Store(store_path)
    out = {}
    for scene in store.scenes():
        groups = [POINTS] + [f"{kind}/{g}" for kind in ("partitions", "pseudo") for g in store.outputs(scene, kind)]
        for group in groups:
            for name, array in store.read(scene, group).items():
                out[f"{scene}/{group}/{name}"] = array
    return out


def assert_same_store(store_path: Path, reference: dict[str, np.ndarray]) -> None:
    got = snapshot(store_path)
    assert sorted(got) == sorted(reference)
    for name, array in reference.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def complete_outputs(store_path: Path) -> dict[str, int]:
    """How many outputs of each stage the store holds complete."""
    store = Store(store_path)
    done = {"text": len(store.outputs("", "text")), "ingest": len(store.scenes()), "partitions": 0, "labels": 0, "refine": 0}
    for scene in store.scenes():
        done["partitions"] += len(store.outputs(scene, "partitions"))
        for group in store.outputs(scene, "pseudo"):
            done["refine" if group.startswith("refined-") else "labels"] += 1
    return done


def temporaries(store_path: Path) -> list[Path]:
    return sorted(store_path.glob("**/.tmp-*"))


def marks(folder: Path) -> list[dict]:
    """Paused writes so far, oldest first."""
    files = sorted(folder.glob("write-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1])) if folder.exists() else []
    return [json.loads(p.read_text()) for p in files]


def wait_for(condition, what: str, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except FileNotFoundError:  # a folder renamed or removed while we looked
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def summary_counts(text: str) -> dict[str, tuple[int, int, int]]:
    """The (computed, cached, failed) table that `python -m preprocess run` prints."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit():
            rows[parts[0]] = tuple(int(p) for p in parts[1:])
    return rows


def start_cluster(start, tmp_path: Path, env: dict[str, str], scheduler_env: dict[str, str] | None = None) -> str:
    """A `dask scheduler` and two single-threaded `dask worker`s on 127.0.0.1; the address."""
    from distributed import Client

    info = tmp_path / "scheduler.json"
    base = {k: v for k, v in env.items() if not k.startswith("HICL_TEST_")}
    start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
           "--scheduler-file", str(info)], base | (scheduler_env or {}),
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: info.exists() and info.stat().st_size > 0, "the scheduler file")
    address = wait_for(lambda: json.loads(info.read_text() or "{}").get("address"), "the scheduler address")
    for i in range(2):
        start([str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
               "--no-dashboard", "--local-directory", str(tmp_path / f"worker{i}")], env,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address


# ------------------------------------------------------------------------------ tests
@pytest.mark.slow
def test_dask_cluster_of_real_processes_matches_inline(tmp_path, dataset, reference, hook_env, processes):
    address = start_cluster(processes, tmp_path, hook_env)
    summary = run(load_pipeline(pipeline_file(tmp_path, dataset, tmp_path / "s.zarr")), scheduler=address, progress=False)
    assert not summary.failures, summary.describe()
    assert {s: c["computed"] for s, c in summary.counts().items()} == {
        "text": 1, "ingest": 4, "partitions": 4, "labels": 4, "refine": 4
    }
    assert_same_store(tmp_path / "s.zarr", reference)
    assert temporaries(tmp_path / "s.zarr") == []


@pytest.mark.slow
@pytest.mark.parametrize("allowed_failures", ["3", "0"], ids=["dask-reschedules", "driver-resubmits"])
def test_worker_killed_mid_write_is_retried_elsewhere(tmp_path, dataset, reference, hook_env, processes, allowed_failures,
                                                     caplog):
    """SIGKILL the worker writing a partition. With Dask's default allowed-failures Dask runs
    the task again itself; with 0 the scheduler reports KilledWorker and the driver resubmits."""
    env = hook_env | {"HICL_TEST_SLOW": "partitions/", "HICL_TEST_DELAY": "1.5"}
    address = start_cluster(processes, tmp_path, env, {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": allowed_failures})
    store = tmp_path / "s.zarr"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run, load_pipeline(pipeline_file(tmp_path, dataset, store)), scheduler=address, progress=False)
        victim = wait_for(lambda: marks(tmp_path / "marks"), "a partition write")[0]
        half_written = wait_for(lambda: list((store / victim["scene"] / "partitions").glob(".tmp-*")), "its temporary")
        os.kill(victim["pid"], signal.SIGKILL)
        summary = running.result(timeout=300)
    assert not summary.failures, summary.describe()
    assert summary.counts()["partitions"]["computed"] == 4
    resubmitted = [r.getMessage() for r in caplog.records if "submitting it again" in r.getMessage()]
    assert bool(resubmitted) == (allowed_failures == "0"), resubmitted
    # the killed write was done again, by another process
    again = [m for m in marks(tmp_path / "marks") if (m["scene"], m["group"]) == (victim["scene"], victim["group"])]
    assert len(again) == 2 and again[1]["pid"] != victim["pid"]
    # the half-written copy is still there, untrusted, and the next run's cleaning removes it
    assert temporaries(store) == half_written
    assert Store(store).is_complete(victim["scene"], victim["group"])
    assert_same_store(store, reference)
    assert Store(store).clean_temporaries() == 1


@pytest.mark.slow
def test_killed_run_resumes_with_only_unfinished_work(tmp_path, dataset, reference, hook_env, processes):
    store = tmp_path / "s.zarr"
    pipeline = pipeline_file(tmp_path, dataset, store)
    cli = [str(BIN / "python"), "-m", "preprocess", "run", str(pipeline), "--quiet"]
    env = hook_env | {"HICL_TEST_SLOW": "pseudo/", "HICL_TEST_DELAY": "1.0"}
    first = processes(cli + ["--workers", "2"], env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill the run (driver and its local cluster) once a scene is finished and a write is under way
    wait_for(lambda: complete_outputs(store)["refine"] >= 1 and temporaries(store), "a finished scene", proc=first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done = complete_outputs(store)
    total = {"text": 1, "ingest": 4, "partitions": 4, "labels": 4, "refine": 4}
    assert 0 < sum(done.values()) < sum(total.values()), done
    assert temporaries(store), "the run was not killed mid-write"

    second = subprocess.run(cli + ["--scheduler", "inline"], env=hook_env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    counts = summary_counts(second.stdout)
    assert counts == {stage: (total[stage] - done[stage], done[stage], 0) for stage in total}, (done, second.stdout)
    assert temporaries(store) == []
    assert_same_store(store, reference)


@pytest.mark.slow
def test_two_runs_at_once_on_one_store(tmp_path, dataset, reference, hook_env, processes):
    """Run A pauses in its first pseudo-label write until run B has started and cleaned the
    store's temporaries; B runs the scenes in the opposite order, so both write the same
    outputs while the other is running."""
    store = tmp_path / "s.zarr"
    pipeline = pipeline_file(tmp_path, dataset, store)
    cli = [str(BIN / "python"), "-m", "preprocess", "run", str(pipeline), "--scheduler", "inline", "--quiet", "--scenes"]
    cleaned = tmp_path / "b-cleaned"
    a = processes(cli + [",".join(SCENES[:3])], hook_env | {
        "HICL_TEST_SLOW": "pseudo/", "HICL_TEST_ONCE": "1", "HICL_TEST_WAIT_FOR": str(cleaned)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: marks(tmp_path / "marks"), "run A's first label write", proc=a)
    b = processes(cli + [",".join(SCENES[::-1])], hook_env | {"HICL_TEST_CLEANED": str(cleaned)},
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_a, err_a = a.communicate(timeout=300)
    out_b, err_b = b.communicate(timeout=300)
    assert cleaned.read_text() == "0", "run B's cleaning removed run A's live temporary"
    assert a.returncode == 0, out_a + err_a
    assert b.returncode == 0, out_b + err_b
    counts_a, counts_b = summary_counts(out_a), summary_counts(out_b)
    for stage, n in {"ingest": 4, "partitions": 4, "labels": 4, "refine": 4}.items():
        # every output computed by at least one run; the overlap shows up as cache hits
        computed = counts_a[stage][0] + counts_b[stage][0]
        assert n <= computed <= n + 3, (stage, out_a, out_b)
        assert counts_a[stage][0] + counts_a[stage][1] == 3 and counts_b[stage][0] + counts_b[stage][1] == 4
    assert temporaries(store) == []
    assert_same_store(store, reference)


def test_ingest_does_not_remove_an_equal_result_written_meanwhile(tmp_path, dataset, monkeypatch):
    """Two writers of the SAME points key: the one finishing second must keep the first's
    complete result (a reader may be using it), not remove it as if it were an older key's."""
    pipeline = load_pipeline(pipeline_file(tmp_path, dataset, tmp_path / "s.zarr"))
    scene = SCENES[0]
    first = stages.ingest(pipeline, scene)
    assert first.computed
    sentinel = tmp_path / "s.zarr" / scene / POINTS / ".first-writer"  # gone if the group is rewritten
    sentinel.touch()
    looked = []
    real = Store.is_complete

    def not_yet_on_first_look(self, scene_id, group, key=None):
        if key is not None and not looked:  # the second writer looked before the first finished
            looked.append(key)
            return False
        return real(self, scene_id, group, key)

    monkeypatch.setattr(Store, "is_complete", not_yet_on_first_look)
    second = stages.ingest(pipeline, scene)
    assert looked and second.ok and second.key == first.key
    assert sentinel.exists(), "the first writer's complete points were removed"
    assert Store(tmp_path / "s.zarr").is_complete(scene, POINTS, first.key)
    assert temporaries(tmp_path / "s.zarr") == []
