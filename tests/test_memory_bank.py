"""FIFO memory bank: order, size, detaching, checkpointing, scene ids."""

from __future__ import annotations

import pytest
import torch

from train.losses.memory_bank import MemoryBank


def _entries(values: list[int], scene: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v = torch.tensor(values, dtype=torch.float32)
    return torch.stack([v, -v], dim=1), torch.tensor(values), torch.full((len(values),), scene)


def test_empty_then_partial_fill():
    bank = MemoryBank(5, 2)
    keys, labels, _ = bank.get()
    assert keys.shape == (0, 2) and labels.shape == (0,)
    bank.push(*_entries([1, 2]))
    keys, labels, _ = bank.get()
    assert labels.tolist() == [1, 2]
    assert keys.tolist() == [[1.0, -1.0], [2.0, -2.0]]


def test_wraparound_keeps_newest_in_fifo_order():
    bank = MemoryBank(5, 2)
    bank.push(*_entries([1, 2, 3]))
    bank.push(*_entries([4, 5, 6, 7]))  # overwrites 1 and 2
    keys, labels, _ = bank.get()
    assert labels.tolist() == [3, 4, 5, 6, 7]
    assert keys[:, 0].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    bank.push(*_entries([8]))
    assert bank.get()[1].tolist() == [4, 5, 6, 7, 8]


def test_push_larger_than_size_keeps_last_entries():
    bank = MemoryBank(3, 2)
    bank.push(*_entries([1]))
    bank.push(*_entries([10, 11, 12, 13, 14]))
    keys, labels, _ = bank.get()
    assert labels.tolist() == [12, 13, 14]
    assert keys.shape == (3, 2)


def test_push_detaches():
    bank = MemoryBank(4, 2)
    protos = torch.ones(2, 2, requires_grad=True)
    bank.push(protos * 2, torch.tensor([0, 1]), torch.tensor([0, 0]))
    keys, _, _ = bank.get()
    assert not keys.requires_grad
    assert keys.tolist() == [[2.0, 2.0], [2.0, 2.0]]


def test_state_dict_roundtrip():
    bank = MemoryBank(4, 2)
    bank.push(*_entries([1, 2, 3, 4, 5, 6]))
    restored = MemoryBank(4, 2)
    restored.load_state_dict(bank.state_dict())
    assert restored.get()[1].tolist() == [3, 4, 5, 6]
    restored.push(*_entries([7]))
    assert restored.get()[1].tolist() == [4, 5, 6, 7]
    assert torch.equal(restored.get()[0], torch.tensor([[4.0, -4.0], [5.0, -5.0], [6.0, -6.0], [7.0, -7.0]]))


def test_scene_ids_travel_with_their_entries():
    bank = MemoryBank(6, 2)
    bank.push(*_entries([1, 2], scene=3))
    bank.push(*_entries([3, 4, 5], scene=4))
    bank.push(*_entries([6, 7, 8], scene=3))  # wraps around: scene 3's first entries are overwritten
    keys, labels, scenes = bank.get()
    assert labels.tolist() == [3, 4, 5, 6, 7, 8] and scenes.tolist() == [4, 4, 4, 3, 3, 3]
    restored = MemoryBank(6, 2)
    restored.load_state_dict(bank.state_dict())
    assert restored.get()[2].tolist() == [4, 4, 4, 3, 3, 3]


def test_push_keeps_only_the_chosen_rows_newest_last():
    bank = MemoryBank(4, 2)
    bank.push(*_entries([1, 2, 3]), keep=torch.tensor([True, False, True]))
    assert bank.get()[1].tolist() == [1, 3]
    bank.push(*_entries([4, 5, 6, 7, 8]), keep=torch.tensor([True, True, False, True, True]))
    assert bank.get()[1].tolist() == [4, 5, 7, 8]  # of the four kept rows all stay, 1 and 3 go
    bank.push(*_entries([9]), keep=torch.tensor([False]))
    assert bank.get()[1].tolist() == [4, 5, 7, 8] and int(bank.count) == 4
    assert bank.labels.tolist() == [7, 8, 4, 5]  # FIFO slots: the spare slot took the rows that did not stay


def test_slots_past_every_pushed_row_are_left_out_without_a_sync():
    bank = MemoryBank(6, 2)
    assert bank.slots()[0].shape == (0, 2)
    bank.push(*_entries([1, 2, 3]), keep=torch.tensor([True, False, True]))
    assert bank.slots()[1].tolist() == [1, 3, -1]  # a bound: the unkept row's slot stays empty
    bank.push(*_entries([4, 5, 6, 7]))
    assert bank.slots()[1].tolist() == [1, 3, 4, 5, 6, 7]
    restored = MemoryBank(6, 2)
    restored.load_state_dict(bank.state_dict())
    assert restored.slots()[1].tolist() == [1, 3, 4, 5, 6, 7]
    short = MemoryBank(6, 2)
    short.push(*_entries([1, 2, 3]), keep=torch.tensor([True, False, True]))
    older = {k: v for k, v in short.state_dict().items() if k != "reach"}  # a checkpoint from before `reach`
    restored.load_state_dict(older)
    assert restored.slots()[1].tolist() == [1, 3]  # the filled slots


def test_push_needs_one_scene_id_per_prototype():
    with pytest.raises(ValueError, match="scene ids"):
        MemoryBank(4, 2).push(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0]))
