"""Checkpoints: atomic replacement (a crash mid-write leaves the previous one loadable), RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from shared.errors import MissingData
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
    with pytest.raises(MissingData, match="bad.pt: not a readable checkpoint"):
        ckpt.load_checkpoint(bad)


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_resume_state_mapped_to_another_device_keeps_cpu_generator_states(tmp_path):
    """map_location other than the CPU (what resuming on a GPU passes; the meta device stands in
    for it here): the weights move, the RNG states stay CPU ByteTensors that set_rng_state and
    Generator.set_state take, and the generators continue exactly."""
    generator = torch.Generator().manual_seed(3)
    path = ckpt.save_checkpoint({"rng": ckpt.rng_state(), "generator": generator.get_state(),
                                 "model": {"w": torch.ones(2)}, "step": 7}, tmp_path / "last.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    state = ckpt.load_checkpoint(path, map_location="meta")
    assert state["model"]["w"].device.type == "meta" and state["step"] == 7
    ckpt.set_rng_state(state["rng"])
    generator.set_state(state["generator"])
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item()) == first
