"""First-in-first-out bank of labelled set prototypes from recent iterations (method.md §4).

Inter-scene keys beyond the few scenes of one batch. Every entry keeps the id of the scene it
came from, so that a scene, met again in a later epoch, never finds its own earlier prototypes
among its "inter-scene" keys (the loss leaves them out, correlation.py). A module with buffers, so the bank moves with `.to(device)` and is
saved and restored with the trainer's checkpoint (`state_dict`).
"""

from __future__ import annotations

import torch
from torch import nn


class MemoryBank(nn.Module):
    """Holds at most `size` (prototype, label, scene id) entries; the oldest are overwritten first."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"MemoryBank needs size > 0 and dim > 0, got size={size}, dim={dim}")
        self.size = size
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("scenes", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # filled slots
        # Slots from `reach` on are still empty (pushes fill slots 0, 1, ... until the bank wraps):
        # the rows pushed so far, at most `size`. Mirrored on the host (`_reach`) so the loss reads
        # it without a sync; a buffer so a resumed run reads the same slots an uninterrupted one does.
        self.register_buffer("reach", torch.zeros((), dtype=torch.long))
        self._reach = 0

    @torch.no_grad()
    def push(self, protos: torch.Tensor, labels: torch.Tensor, scenes: torch.Tensor,
             keep: torch.Tensor | None = None) -> None:
        """Append the rows `keep` (all by default) of (detached) prototypes (n, dim) with labels
        (n,) and the ids (n,) of the scenes they come from; only the newest `size` stay.

        Where each row goes is worked out on the device (rows that do not stay land in a spare
        slot that is dropped), so a push never waits for a GPU, whatever `keep` holds."""
        if not (protos.shape[0] == labels.shape[0] == scenes.shape[0]):
            raise ValueError(f"MemoryBank.push: {protos.shape[0]} prototypes, {labels.shape[0]} labels, "
                             f"{scenes.shape[0]} scene ids")
        if protos.shape[0] == 0:
            return
        self._reach = min(self.size, self._reach + protos.shape[0])
        self.reach.fill_(self._reach)
        device = self.keys.device
        keep = torch.ones(protos.shape[0], dtype=torch.bool, device=device) if keep is None else keep.to(device)
        rank = torch.cumsum(keep, 0) - 1  # a kept row's place among the kept rows
        count = rank[-1] + 1
        stay = count.clamp(max=self.size)  # the newest `size` kept rows stay
        first = count - stay
        slot = torch.where(keep & (rank >= first), (self.ptr + rank - first) % self.size, self.size)
        for buffer, values in ((self.keys, protos.detach()), (self.labels, labels), (self.scenes, scenes)):
            spare = torch.cat([buffer, buffer[:1]])
            spare[slot] = values.to(device, buffer.dtype)
            buffer.copy_(spare[:-1])
        self.ptr.copy_((self.ptr + stay) % self.size)
        self.count.copy_(torch.clamp(self.count + stay, max=self.size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "count" in state_dict:  # checkpoints from before `reach` was kept: the filled slots
            state_dict.setdefault(prefix + "reach", state_dict[prefix + "count"].clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._reach = int(self.reach)  # once, when a run resumes

    def slots(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys, labels and scene ids of every slot that may hold an entry, in slot order, without
        a host sync (an empty one among them has label -1, so it is never a key)."""
        return self.keys[:self._reach], self.labels[:self._reach], self.scenes[:self._reach]

    def get(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Filled entries, oldest first: keys (k, dim), labels (k,), scene ids (k,)."""
        count = int(self.count)
        if count < self.size:
            order = torch.arange(count, device=self.keys.device)
        else:
            order = (self.ptr + torch.arange(self.size, device=self.keys.device)) % self.size
        return self.keys[order], self.labels[order], self.scenes[order]
