"""Checkpoints: atomic replacement (a crash mid-write leaves the previous one loadable), RNG state,
and one clear line for a corrupt, foreign, newer or unsafe file (pickled code is refused, never run)."""

from __future__ import annotations

import io
import os
import random

import numpy as np
import pytest
import torch

from shared.errors import CheckpointError, MissingData
from train.engine import checkpoint as ckpt


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"step": 1, "w": torch.arange(4)}, path)
    real_save = torch.save

    def crash(obj, f, *a, **k):  # write part of the new file, then die
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no stray temporary
    ckpt.save_checkpoint({"step": 3}, path)
    assert ckpt.load_checkpoint(path)["step"] == 3


def test_truncated_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MissingData, match="none.pt: checkpoint not found; train it"):
        ckpt.load_checkpoint(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    ckpt.save_checkpoint({"x": torch.ones(100)}, bad)
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="bad.pt: not a readable checkpoint .*corrupt or truncated"):
        ckpt.load_checkpoint(bad)
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable checkpoint"):
        ckpt.load_checkpoint(text)


class Payload:
    """Pickles as a call of os.system: what a malicious checkpoint would hide."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_callable_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "format_version": 1, "model": {}, "x": Payload(marker)}, evil)
    with pytest.raises(CheckpointError) as error:
        ckpt.load_checkpoint(evil)
    message = str(error.value)
    assert message.startswith(f"{evil}: refused: it holds the pickled Python object") and "system" in message
    assert "\n" not in message and not marker.exists()


def test_foreign_and_newer_files_are_named(tmp_path):
    foreign = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"conv.weight": torch.ones(1)}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match=r"resnet.pt: not a hicl3d checkpoint \(it holds a dict with keys \['epoch', 'state_dict'\]"):
        ckpt.load_checkpoint(foreign)
    bare = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), bare)
    with pytest.raises(CheckpointError, match="tensor.pt: not a hicl3d checkpoint \\(it holds a Tensor"):
        ckpt.load_checkpoint(bare)
    newer = tmp_path / "newer.pt"
    torch.save({"format": ckpt.FORMAT, "format_version": ckpt.FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer.pt: written by a newer hicl3d"):
        ckpt.load_checkpoint(newer)


def test_rng_state_round_trip_through_a_safe_load():
    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), np.random.standard_normal(), torch.rand(1).item())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    ckpt.set_rng_state(torch.load(buffer, weights_only=True))
    assert (random.random(), np.random.rand(), np.random.standard_normal(), torch.rand(1).item()) == first


def test_resume_on_another_device_loads_on_the_cpu_then_moves(tmp_path):
    """Resuming on a GPU (the meta device stands in for it here): the checkpoint loads on the CPU,
    so the RNG states are the CPU ByteTensors that set_rng_state and Generator.set_state take
    (mapped to a GPU, resuming failed); the weights move when loaded into the module."""
    generator = torch.Generator().manual_seed(3)
    path = ckpt.save_checkpoint({"rng": ckpt.rng_state(), "generator": generator.get_state(),
                                 "model": {"w": torch.ones(2)}, "step": 7}, tmp_path / "last.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 7 and state["generator"].device.type == "cpu" and state["generator"].dtype == torch.uint8
    assert state["model"]["w"].device.type == "cpu"  # the trainer's load_state_dict moves it
    ckpt.set_rng_state(state["rng"])
    generator.set_state(state["generator"])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()) == first
