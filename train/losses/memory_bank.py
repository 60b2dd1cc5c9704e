"""First-in-first-out bank of labelled set prototypes from recent iterations (method.md §4).

Inter-scene keys beyond the few scenes of one batch. Every entry keeps the id of the scene it
came from, so that a scene, met again in a later epoch, never finds its own earlier prototypes
among its "inter-scene" keys. A module with buffers, so the bank moves with `.to(device)` and is
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

    @torch.no_grad()
    def push(self, protos: torch.Tensor, labels: torch.Tensor, scenes: torch.Tensor) -> None:
        """Append (detached) prototypes (n, dim) with labels (n,) and the ids (n,) of the scenes
        they come from; only the newest `size` stay."""
        if not (protos.shape[0] == labels.shape[0] == scenes.shape[0]):
            raise ValueError(f"MemoryBank.push: {protos.shape[0]} prototypes, {labels.shape[0]} labels, "
                             f"{scenes.shape[0]} scene ids")
        protos, labels, scenes = protos.detach()[-self.size:], labels.detach()[-self.size:], scenes[-self.size:]
        n = protos.shape[0]
        if n == 0:
            return
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = protos.to(self.keys.dtype)
        self.labels[slots] = labels.to(torch.long)
        self.scenes[slots] = scenes.to(self.scenes.device, torch.long)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))

    def get(self, exclude_scene: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Filled entries, oldest first, leaving out those of scene `exclude_scene`:
        keys (k, dim), labels (k,), scene ids (k,)."""
        count = int(self.count)
        if count < self.size:
            order = torch.arange(count, device=self.keys.device)
        else:
            order = (self.ptr + torch.arange(self.size, device=self.keys.device)) % self.size
        if exclude_scene is not None:
            order = order[self.scenes[order] != exclude_scene]
        return self.keys[order], self.labels[order], self.scenes[order]
