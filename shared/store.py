"""The Zarr v3 store's mechanics: atomic stage writes, reads of complete outputs, and small
JSON files updated under a lock. What the groups are called and what the keys hash is
`shared.schema`'s business.

A stage output is a group whose attributes hold its key, parameters and `complete: true`.
It is written under a temporary name and renamed into place, so a killed run leaves only a
`.tmp-*` folder that nothing trusts; `complete` is checked as well so a group copied or
synced half-way is never taken as done either. A writer holds an exclusive `flock` on its
temporary folder until the rename, so cleaning removes only the leftovers of dead writers,
never the folder a concurrent run is still writing (the kernel drops the lock of a killed
process).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import zarr

from shared.errors import MissingData
from shared.schema import POINTS

STORE_FORMAT = 1


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


class Store:
    """A dataset's store on the local filesystem (or a mounted shared filesystem)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists() and not (self.path / "zarr.json").exists():
            raise FileExistsError(
                f"{self.path}: exists but is not a Zarr store; choose another [store] path or remove it"
            )
        self.root = zarr.open_group(str(self.path), mode="a", zarr_format=3)
        if "format" not in self.root.attrs:
            self.root.attrs["format"] = STORE_FORMAT

    # ---------------------------------------------------------------- reading
    def scenes(self) -> list[str]:
        """Scenes whose points are complete, found on disk (the manifest says which a pipeline made)."""
        return sorted(s for s in self._dirs(self.path) if self.is_complete(s, POINTS))

    def _dirs(self, path: Path) -> list[str]:
        if not path.is_dir():
            return []
        return [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def outputs(self, scene: str, kind: str) -> list[str]:
        """Complete outputs of a kind ('partitions', 'pseudo') of a scene, by group name, found on disk."""
        return sorted(n for n in self._dirs(self.path / scene / kind) if self.is_complete(scene, f"{kind}/{n}"))

    def attrs(self, scene: str, group: str) -> dict[str, Any]:
        meta = self.path / scene / group / "zarr.json"
        if not meta.is_file():
            raise KeyError(f"{self.path}: scene {scene!r} has no {group!r}")
        return json.loads(meta.read_text()).get("attributes", {})

    def is_complete(self, scene: str, group: str, key: str | None = None) -> bool:
        try:
            attrs = self.attrs(scene, group)
        except (KeyError, json.JSONDecodeError):
            return False
        return bool(attrs.get("complete")) and (key is None or attrs.get("key") == key)

    def has_array(self, scene: str, group: str, name: str) -> bool:
        return (self.path / scene / group / name / "zarr.json").is_file()

    def read(self, scene: str, group: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of a complete group (all of them, or `names`)."""
        if not self.is_complete(scene, group):
            raise MissingData(f"{self.path}: {scene}/{group} is missing or incomplete; run `python -m preprocess run` first")
        g = zarr.open_group(str(self.path / scene / group), mode="r", zarr_format=3)
        keys = list(names) if names is not None else [k for k, _ in g.arrays()]
        return {k: g[k][...] for k in keys}

    # ---------------------------------------------------------------- writing
    def write(
        self,
        scene: str,
        group: str,
        arrays: Mapping[str, np.ndarray],
        attrs: Mapping[str, Any],
    ) -> bool:
        """Write a stage output atomically; False if another writer finished it first.

        The group is built under `<scene>/<parent>/.tmp-<name>-<uuid>` and renamed into place.
        A rename onto an existing complete group fails on POSIX, which is how two concurrent
        runs of one stage resolve: the first to finish wins and the other discards its copy.
        """
        final = self.path / scene / group
        final.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_groups(scene, group)
        tmp, lock = _locked_temporary(final)
        try:
            g = zarr.open_group(str(tmp), mode="w-", zarr_format=3)  # "w" would recreate the locked folder
            for name, array in arrays.items():
                array = np.ascontiguousarray(array)
                chunks = (max(1, min(len(array), 1 << 18)),) + array.shape[1:] if array.ndim else ()
                g.create_array(name, data=array, chunks=chunks or "auto")
            g.update_attributes(_json_safe({**attrs, "complete": True}))
            if final.exists() and not self.is_complete(scene, group):
                shutil.rmtree(final, ignore_errors=True)  # leftover of an older, broken writer
            try:
                os.rename(tmp, final)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            return True
        finally:
            os.close(lock)

    def _ensure_groups(self, scene: str, group: str) -> None:
        parts = [scene, *group.split("/")[:-1]]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if not (self.path / sub / "zarr.json").exists():
                zarr.open_group(str(self.path / sub), mode="a", zarr_format=3)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """A JSON file at the store's root, or None where there is none."""
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    def update_json(self, name: str, update: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        """Replace the JSON file `name` by `update(current contents or None)`, holding the store's
        lock so concurrent updaters take turns, and renaming a complete file into place so a
        reader never sees half of one."""
        lock = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = _json_safe(update(self.read_json(name)))
            tmp = self.path / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path / name)
            return data
        finally:
            os.close(lock)

    def remove(self, scene: str, group: str) -> None:
        shutil.rmtree(self.path / scene / group, ignore_errors=True)

    def clean_temporaries(self) -> int:
        """Delete `.tmp-*` leftovers of killed writers, leaving those of live (locked) writers
        alone; returns how many were deleted."""
        removed = 0
        for p in list(self.path.glob("*/*/.tmp-*")) + list(self.path.glob("*/.tmp-*")):
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:  # renamed into place or removed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its writer is alive
                os.close(fd)
                continue
            shutil.rmtree(p, ignore_errors=True)
            os.close(fd)
            removed += 1
        return removed


def _locked_temporary(final: Path) -> tuple[Path, int]:
    """A new temporary folder beside `final` and a descriptor holding its exclusive lock.

    A cleaner may lock and delete the folder between its creation and our lock, taking it for
    a dead writer's; the lock is then on a deleted folder, so check and make another."""
    while True:
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        fd = os.open(tmp, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)
