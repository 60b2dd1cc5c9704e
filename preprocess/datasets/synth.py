"""The embedded default dataset: procedural indoor rooms written in the ScanNet v2 layout.

Each room (4-8 m, walls and floor, doors, windows, pictures, curtains, and furniture of the
20 ScanNet benchmark classes plus a few unlabelled-in-the-benchmark props) is built from boxes,
cylinders and folded sheets meshed as ~4 cm grids, so it has ScanNet's vertex density. Colours
come from one palette shared by every class, with per-object stripes, checks or blotches, so
colour alone does not tell the class. Frames are ray-cast from a camera path around the room.
Everything is drawn from `numpy.random.default_rng([seed, scene index])`: the same seed gives
byte-identical files, and scene i does not depend on how many scenes are generated.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from preprocess.geometry.render import MeshRaycaster
from shared.ply import write_ply
from shared.classes import SCANNET_NAMES, SCANNET_NYU40_IDS

# nyu40 ids: the benchmark's 20 classes and the props ScanNet annotates but does not evaluate
NYU40 = dict(zip(SCANNET_NAMES, SCANNET_NYU40_IDS)) | {
    "pillow": 18, "books": 23, "television": 25, "box": 29, "night stand": 32, "lamp": 35,
}
PALETTE = np.array([
    [236, 232, 220], [200, 190, 170], [160, 120, 80], [120, 85, 55], [90, 60, 40], [60, 60, 65],
    [130, 130, 135], [185, 185, 190], [240, 240, 240], [40, 40, 45], [170, 60, 50], [200, 150, 60],
    [110, 140, 80], [70, 100, 130], [150, 170, 200], [200, 120, 140], [120, 90, 140], [90, 150, 150],
    [210, 200, 120], [150, 100, 70], [225, 205, 180], [100, 110, 90], [50, 80, 110], [180, 90, 60],
], dtype=np.float64)
ROOM_TYPES = {  # furniture: (kind, min count, max count)
    "bedroom": [("bed", 1, 2), ("night stand", 1, 2), ("cabinet", 0, 2), ("desk", 0, 1), ("bookshelf", 0, 1),
                ("sofa", 0, 1), ("otherfurniture", 0, 1), ("box", 0, 2)],
    "living room": [("sofa", 1, 2), ("table", 1, 1), ("bookshelf", 0, 2), ("cabinet", 0, 2),
                    ("otherfurniture", 1, 2), ("desk", 0, 1), ("chair", 0, 2), ("box", 0, 1)],
    "kitchen": [("counter", 1, 2), ("refrigerator", 1, 1), ("cabinet", 1, 2), ("table", 1, 1),
                ("otherfurniture", 0, 1), ("chair", 0, 1)],
    "bathroom": [("toilet", 1, 2), ("sink", 1, 2), ("bathtub", 0, 1), ("shower", 0, 1), ("cabinet", 0, 1),
                 ("otherfurniture", 0, 1)],
    "office": [("desk", 2, 4), ("bookshelf", 1, 2), ("cabinet", 1, 2), ("table", 0, 1), ("sofa", 0, 1),
               ("refrigerator", 0, 1), ("otherfurniture", 0, 2), ("box", 0, 2)],
}
ROOM_SIZE = {"bedroom": (4.0, 6.5), "living room": (5.0, 8.0), "kitchen": (4.0, 7.0), "bathroom": (4.0, 5.0),
             "office": (5.0, 8.0)}
AGAINST_WALL = {"bed", "night stand", "cabinet", "desk", "bookshelf", "counter", "refrigerator", "toilet",
                "sink", "bathtub", "shower", "sofa"}


# --------------------------------------------------------------------------------------------
# Primitives (object-local coordinates: x along the object's width, y its depth with the back
# at y = 0, z up) and their grid meshes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prim:
    """A box (lo, hi corners), a vertical cylinder (cx, cy, z0, z1, r), a folded sheet
    facing +y (x0, x1, z0, z1, y, fold depth, fold period) or a one-sided rectangle (origin,
    u, v; facing u x v); `role` picks the object's colour."""

    kind: str
    params: tuple[float, ...]
    role: int = 0


def box(lo, hi, role: int = 0) -> Prim:
    return Prim("box", tuple(float(v) for v in (*lo, *hi)), role)


def cylinder(cx, cy, z0, z1, r, role: int = 0) -> Prim:
    return Prim("cyl", (float(cx), float(cy), float(z0), float(z1), float(r)), role)


def _grid(f, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """Mesh of f(a, b) over [0,1]^2 in nu x nv cells; triangles face along df/da x df/db."""
    a, b = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="ij")
    vertices = f(a.ravel(), b.ravel())
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    p00 = (i * (nv + 1) + j).ravel()
    p10, p01 = p00 + nv + 1, p00 + 1
    p11 = p10 + 1
    faces = np.concatenate([np.stack([p00, p10, p11], 1), np.stack([p00, p11, p01], 1)])
    return vertices, faces


def _cells(length: float, res: float, minimum: int = 1) -> int:
    return max(minimum, int(np.ceil(length / res - 1e-9)))


def _rectangle(origin, u, v, res: float) -> tuple[np.ndarray, np.ndarray]:
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    return _grid(lambda a, b: origin + a[:, None] * u + b[:, None] * v,
                 _cells(np.linalg.norm(u), res), _cells(np.linalg.norm(v), res))


def _box_mesh(p: tuple[float, ...], res: float) -> list[tuple[np.ndarray, np.ndarray]]:
    lo, hi = np.array(p[:3]), np.array(p[3:])
    size = hi - lo
    sides = []
    for axis in range(3):
        b, c = (axis + 1) % 3, (axis + 2) % 3
        eb, ec = np.eye(3)[b] * size[b], np.eye(3)[c] * size[c]
        top = lo.copy()
        top[axis] = hi[axis]
        sides.append(_rectangle(top, eb, ec, res))  # normal +axis
        sides.append(_rectangle(lo, ec, eb, res))  # normal -axis
    return sides


def _cylinder_mesh(p: tuple[float, ...], res: float) -> list[tuple[np.ndarray, np.ndarray]]:
    cx, cy, z0, z1, r = p
    n_around = _cells(2 * np.pi * r, res, minimum=12)

    def ring(angle, radius, z):
        return np.stack([cx + radius * np.cos(2 * np.pi * angle), cy + radius * np.sin(2 * np.pi * angle), z], 1)

    n_radial, n_height = _cells(r, res), _cells(z1 - z0, res)
    return [
        _grid(lambda a, b: ring(a, np.full_like(a, r), z0 + b * (z1 - z0)), n_around, n_height),
        _grid(lambda a, b: ring(b, a * r, np.full_like(a, z1)), n_radial, n_around),  # top, +z
        _grid(lambda a, b: ring(a, b * r, np.full_like(a, z0)), n_around, n_radial),  # bottom, -z
    ]


def sheet(x0, x1, z0, z1, y, depth, period, role: int = 0) -> Prim:
    return Prim("sheet", tuple(float(v) for v in (x0, x1, z0, z1, y, depth, period)), role)


def rect(origin, u, v, role: int = 0) -> Prim:
    return Prim("rect", tuple(float(x) for x in (*origin, *u, *v)), role)


def _rect_mesh(p: tuple[float, ...], res: float) -> list[tuple[np.ndarray, np.ndarray]]:
    return [_rectangle(p[:3], p[3:6], p[6:9], res)]


def _sheet_mesh(p: tuple[float, ...], res: float) -> list[tuple[np.ndarray, np.ndarray]]:
    x0, x1, z0, z1, y, depth, period = p

    def f(a, b):  # a: height, b: along x, so df/da x df/db faces +y
        x = x0 + b * (x1 - x0)
        return np.stack([x, y + depth * np.sin(2 * np.pi * (x - x0) / period), z0 + a * (z1 - z0)], 1)

    return [_grid(f, _cells(z1 - z0, res), _cells(x1 - x0, res / 2))]


_MESHERS = {"box": _box_mesh, "cyl": _cylinder_mesh, "sheet": _sheet_mesh, "rect": _rect_mesh}


def _weld(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate meshes and merge coincident vertices, so an object is one connected
    surface; triangles that collapse (cylinder cap centres) are dropped."""
    offsets = np.cumsum([0] + [len(v) for v, _ in pieces])
    vertices = np.concatenate([v for v, _ in pieces])
    faces = np.concatenate([f + o for (_, f), o in zip(pieces, offsets)])
    keys = np.round(vertices * 1e5).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep vertices in first-seen order: stable and local
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    vertices = vertices[first[order]]
    faces = rank[inverse.ravel()][faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return vertices, faces[keep]


# --------------------------------------------------------------------------------------------
# Objects and the room
# --------------------------------------------------------------------------------------------
@dataclass
class SynthObject:
    """An object of one class: primitives in its local frame, placed by a rotation about z
    (2x2, a multiple of 90 degrees) and a translation on the floor. Objects placed together
    (a bed and its pillows) share a `group`; groups never overlap (-1: walls and floor)."""

    name: str
    prims: list[Prim]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(2))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(2))
    group: int = -1

    def local_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for p in self.prims:
            if p.kind == "box":
                a, b = np.array(p.params[:3]), np.array(p.params[3:])
            elif p.kind == "cyl":
                cx, cy, z0, z1, r = p.params
                a, b = np.array([cx - r, cy - r, z0]), np.array([cx + r, cy + r, z1])
            elif p.kind == "sheet":
                x0, x1, z0, z1, y, depth, _ = p.params
                a, b = np.array([x0, y - depth, z0]), np.array([x1, y + depth, z1])
            else:
                corners = np.array(p.params[:3]) + np.array([[0, 0], [1, 0], [0, 1], [1, 1]]) @ np.reshape(p.params[3:], (2, 3))
                a, b = corners.min(0), corners.max(0)
            lo, hi = np.minimum(lo, a), np.maximum(hi, b)
        return lo, hi

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box (lo, hi)."""
        lo, hi = self.local_bounds()
        corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]]) @ self.rotation.T
        corners += self.translation
        return np.r_[corners.min(0), lo[2]], np.r_[corners.max(0), hi[2]]

    def mesh(self, res: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World vertices, faces and the colour role of each vertex."""
        pieces, roles = [], []
        for p in self.prims:
            vertices, faces = _weld(_MESHERS[p.kind](p.params, res))
            pieces.append((vertices, faces))
            roles.append(np.full(len(vertices), p.role, np.int8))
        offsets = np.cumsum([0] + [len(v) for v, _ in pieces])
        vertices = np.concatenate([v for v, _ in pieces])
        vertices[:, :2] = vertices[:, :2] @ self.rotation.T + self.translation
        faces = np.concatenate([f + o for (_, f), o in zip(pieces, offsets)])
        return vertices, faces, np.concatenate(roles)


def _legs(w: float, d: float, h: float, t: float, inset: float, rng: np.random.Generator, role: int = 1) -> list[Prim]:
    xs, ys = (inset, w - inset - t), (inset, d - inset - t)
    if rng.random() < 0.5:
        return [box((x, y, 0), (x + t, y + t, h), role) for x in xs for y in ys]
    return [cylinder(x + t / 2, y + t / 2, 0, h, t / 2, role) for x in xs for y in ys]


def _furniture(kind: str, rng: np.random.Generator) -> list[SynthObject]:
    """One piece of furniture (and what stands on it) in local coordinates, back at y = 0."""
    u = rng.uniform
    if kind == "bed":
        w, d = u(1.0, 1.9), u(1.95, 2.2)
        objs = [SynthObject("bed", [box((0, 0, 0), (w, d, 0.3), 1), box((0.03, 0.08, 0.3), (w - 0.03, d - 0.02, u(0.5, 0.6))),
                                    box((0, 0, 0), (w, 0.08, u(0.9, 1.2)), 1)])]
        for x in ([0.1] if w < 1.4 else [0.1, w / 2 + 0.05]):
            objs.append(SynthObject("pillow", [box((x, 0.15, 0.58), (x + min(0.6, w / 2 - 0.15), 0.55, 0.72))]))
        return objs
    if kind == "night stand":
        w, h = u(0.4, 0.55), u(0.5, 0.65)
        objs = [SynthObject("night stand", [box((0, 0, 0), (w, 0.4, h)), box((0.04, 0.4, 0.1), (w - 0.04, 0.42, h - 0.08), 1)])]
        if rng.random() < 0.7:
            objs.append(SynthObject("lamp", [cylinder(w / 2, 0.2, h, h + 0.3, 0.03, 1), cylinder(w / 2, 0.2, h + 0.3, h + 0.5, 0.14)]))
        return objs
    if kind == "chair":
        s, seat = u(0.42, 0.5), u(0.42, 0.48)
        return [SynthObject("chair", _legs(s, s, seat, 0.035, 0.0, rng) + [
            box((0, 0, seat), (s, s, seat + 0.05)), box((0, 0, seat + 0.05), (s, 0.05, seat + u(0.4, 0.5)))])]
    if kind == "sofa":
        w, d = u(1.6, 2.4), u(0.8, 0.95)
        return [SynthObject("sofa", [box((0, 0, 0.08), (w, d, 0.42)), box((0, 0, 0.42), (w, 0.22, u(0.8, 0.9))),
                                     box((0, 0, 0.42), (0.18, d, 0.62), 1), box((w - 0.18, 0, 0.42), (w, d, 0.62), 1),
                                     box((0.05, 0.05, 0), (w - 0.05, d - 0.05, 0.08), 1)])]
    if kind == "table":
        h = u(0.72, 0.76)
        if rng.random() < 0.3:
            r = u(0.45, 0.6)
            return [SynthObject("table", [cylinder(r, r, h - 0.04, h, r), cylinder(r, r, 0, h - 0.04, 0.06, 1),
                                          cylinder(r, r, 0, 0.03, 0.3, 1)])]
        w, d = u(0.9, 1.8), u(0.7, 1.0)
        return [SynthObject("table", [box((0, 0, h - 0.04), (w, d, h))] + _legs(w, d, h - 0.04, 0.05, 0.04, rng))]
    if kind == "desk":
        w, d, h = u(1.0, 1.6), u(0.55, 0.75), u(0.72, 0.76)
        prims = [box((0, 0, h - 0.03), (w, d, h)), box((0, 0, 0), (0.04, d, h - 0.03), 1),
                 box((0.04, 0, 0.3), (w - 0.04, 0.03, h - 0.03), 1)]
        prims.append(box((w - 0.45, 0.03, 0), (w - 0.04, d, h - 0.03), 1) if rng.random() < 0.5
                     else box((w - 0.04, 0, 0), (w, d, h - 0.03), 1))
        objs = [SynthObject("desk", prims)]
        if rng.random() < 0.5:
            objs.append(SynthObject("lamp", [cylinder(0.2, 0.15, h, h + 0.4, 0.02, 1), cylinder(0.2, 0.15, h + 0.4, h + 0.5, 0.1)]))
        return objs
    if kind == "cabinet":
        w, d = u(0.5, 1.2), u(0.4, 0.6)
        h = u(0.6, 1.0) if rng.random() < 0.6 else u(1.7, 2.1)
        doors = int(rng.integers(1, 3))
        prims = [box((0, 0, 0), (w, d, h))]
        for k in range(doors):
            x0, x1 = w * k / doors + 0.02, w * (k + 1) / doors - 0.02
            prims += [box((x0, d, 0.05), (x1, d + 0.02, h - 0.05), 1), box((x1 - 0.06, d + 0.02, h / 2), (x1 - 0.04, d + 0.05, h / 2 + 0.12))]
        return [SynthObject("cabinet", prims)]
    if kind == "bookshelf":
        w, d, h = u(0.6, 1.2), u(0.28, 0.4), u(1.2, 2.0)
        shelves = int(h / 0.35)
        prims = [box((0, 0, 0), (0.03, d, h)), box((w - 0.03, 0, 0), (w, d, h)), box((0.03, 0, 0), (w - 0.03, 0.02, h), 1)]
        prims += [box((0.03, 0.02, z), (w - 0.03, d, z + 0.025)) for z in np.linspace(0, h - 0.025, shelves + 1)]
        books = []
        for z in np.linspace(0, h - 0.025, shelves + 1)[:-1]:
            x = 0.04 + u(0, 0.2)
            while x < w - 0.15 and rng.random() < 0.9:
                bw = u(0.02, 0.06)
                books.append(box((x, 0.04, z + 0.025), (x + bw, d - u(0.02, 0.08), z + 0.025 + u(0.15, 0.28)), int(rng.integers(0, 2))))
                x += bw + 0.003
        return [SynthObject("bookshelf", prims)] + ([SynthObject("books", books)] if books else [])
    if kind == "counter":
        w, d, h = u(1.5, 3.0), u(0.55, 0.65), u(0.86, 0.92)
        objs = [SynthObject("cabinet", [box((0, 0, 0.08), (w, d - 0.05, h - 0.04)), box((0.05, 0, 0), (w - 0.05, d - 0.1, 0.08), 1)]),
                SynthObject("counter", [box((0, 0, h - 0.04), (w, d, h))])]
        if rng.random() < 0.6:
            x = u(0.1, w - 0.65)
            objs.append(SynthObject("sink", [box((x, 0.1, h), (x + 0.55, 0.5, h + 0.04)), cylinder(x + 0.27, 0.05, h, h + 0.25, 0.015, 1)]))
        return objs
    if kind == "sink":
        return [SynthObject("sink", [cylinder(0.3, 0.15, 0, 0.75, 0.08, 1), box((0.05, 0, 0.75), (0.55, 0.45, 0.88)),
                                     cylinder(0.3, 0.04, 0.88, 1.0, 0.015, 1)])]
    if kind == "toilet":
        return [SynthObject("toilet", [box((0.02, 0, 0.35), (0.4, 0.2, 0.78), 1), cylinder(0.21, 0.45, 0, 0.38, 0.17),
                                       cylinder(0.21, 0.45, 0.38, 0.42, 0.2, 1)])]
    if kind in ("bathtub", "shower"):
        w, d, h = u(1.5, 1.8), u(0.7, 0.85), u(0.5, 0.6)
        curtain = SynthObject("shower curtain", [sheet(0, w, h + 0.1 if kind == "bathtub" else 0.05, 2.0, d + 0.03, 0.03, 0.2)])
        if kind == "shower":
            return [curtain]
        t = 0.07
        return [SynthObject("bathtub", [box((0, 0, 0), (w, d, 0.1)), box((0, 0, 0.1), (w, t, h)), box((0, d - t, 0.1), (w, d, h)),
                                        box((0, t, 0.1), (t, d - t, h)), box((w - t, t, 0.1), (w, d - t, h))]), curtain]
    if kind == "refrigerator":
        w, d, h = u(0.6, 0.9), u(0.6, 0.75), u(1.6, 1.9)
        split = h * u(0.55, 0.7)
        return [SynthObject("refrigerator", [box((0, 0, 0), (w, d, h)), box((0.01, d, 0.02), (w - 0.01, d + 0.02, split - 0.01), 1),
                                             box((0.01, d, split + 0.01), (w - 0.01, d + 0.02, h - 0.02), 1),
                                             box((w - 0.08, d + 0.02, split - 0.35), (w - 0.06, d + 0.05, split - 0.05))])]
    if kind == "otherfurniture":
        choice = rng.integers(0, 3)
        if choice == 0:  # stool
            return [SynthObject("otherfurniture", [cylinder(0.18, 0.18, 0.42, 0.46, 0.18)] + _legs(0.36, 0.36, 0.42, 0.03, 0.04, rng))]
        if choice == 1:  # trash can
            return [SynthObject("otherfurniture", [cylinder(0.15, 0.15, 0, u(0.3, 0.5), 0.15)])]
        return [SynthObject("otherfurniture", [box((0, 0, 0), (u(0.5, 0.9), u(0.4, 0.6), u(0.35, 0.5)))])]  # ottoman
    if kind == "box":
        s = u(0.25, 0.5)
        return [SynthObject("box", [box((0, 0, 0), (s, s * u(0.7, 1.0), s * u(0.6, 1.0)))])]
    raise ValueError(f"unknown furniture kind {kind!r}")


@dataclass(frozen=True)
class Wall:
    """A wall's frame: local x along it, y into the room, z up (a proper rotation)."""

    origin: np.ndarray
    tangent: np.ndarray
    length: float

    @property
    def inward(self) -> np.ndarray:
        return np.array([-self.tangent[1], self.tangent[0]])

    def place(self, obj: SynthObject, s: float, offset: float = 0.0) -> None:
        obj.rotation = np.stack([self.tangent, self.inward], axis=1)
        obj.translation = self.origin + s * self.tangent + offset * self.inward


def _walls(width: float, depth: float) -> list[Wall]:
    return [Wall(np.array([0.0, 0.0]), np.array([1.0, 0.0]), width), Wall(np.array([width, 0.0]), np.array([0.0, 1.0]), depth),
            Wall(np.array([width, depth]), np.array([-1.0, 0.0]), width), Wall(np.array([0.0, depth]), np.array([0.0, -1.0]), depth)]


def _overlaps(a: tuple[np.ndarray, np.ndarray], placed: list[tuple[np.ndarray, np.ndarray]], margin: float) -> bool:
    return any(np.all(a[0] < b[1] + margin) and np.all(b[0] < a[1] + margin) for b in placed)


@dataclass
class SynthRoom:
    """A generated room before it is written: objects (walls and floor included) and camera path."""

    scene_type: str
    size: tuple[float, float, float]  # width (x), depth (y), wall height
    objects: list[SynthObject]
    camera_to_world: np.ndarray  # (frames,4,4) OpenCV camera poses


def make_room(rng: np.random.Generator, frames: int = 30) -> SynthRoom:
    """Lay out one room: wall items, then furniture without overlapping bounding boxes."""
    scene_type = str(rng.choice(list(ROOM_TYPES)))
    width, depth = rng.uniform(*ROOM_SIZE[scene_type], size=2)
    height = rng.uniform(2.5, 3.0)
    walls = _walls(width, depth)
    # a scan sees only the room side of walls and floor: one-sided rectangles facing the room
    objects = [SynthObject("floor", [rect((0, 0, 0), (width, 0, 0), (0, depth, 0))])]
    for wall in walls:
        wall_obj = SynthObject("wall", [rect((0, 0, 0), (0, 0, height), (wall.length, 0, 0))])
        wall.place(wall_obj, 0.0)
        objects.append(wall_obj)
    placed: list[tuple[np.ndarray, np.ndarray]] = []

    def try_place(items: list[SynthObject], tries: int, position, margin: float = 0.03, clearance: float = 0.0) -> bool:
        lo, hi = np.min([o.local_bounds()[0] for o in items], 0), np.max([o.local_bounds()[1] for o in items], 0)
        lo[1] = min(lo[1], 0.0)  # the floor between an object's back (y = 0) and the object is its own (a shower)
        anchor = SynthObject("", [box(lo, hi + [0, clearance, 0])])
        for _ in range(tries):
            position(anchor, lo, hi)
            bounds = anchor.bounds()
            inside = np.all(bounds[0][:2] >= -1e-6) and bounds[1][0] <= width + 1e-6 and bounds[1][1] <= depth + 1e-6
            if inside and not _overlaps(bounds, placed, margin):
                for o in items:
                    o.rotation, o.translation, o.group = anchor.rotation, anchor.translation, len(placed)
                placed.append(bounds)
                objects.extend(items)
                return True
        return False

    def on_wall(offset: float = 0.0):
        def position(anchor: SynthObject, lo: np.ndarray, hi: np.ndarray) -> None:
            wall = walls[int(rng.integers(0, 4))]
            wall.place(anchor, rng.uniform(0.05 - lo[0], max(0.05 - lo[0], wall.length - hi[0] - 0.05)), offset)
        return position

    def free(anchor: SynthObject, lo: np.ndarray, hi: np.ndarray) -> None:
        quarter = int(rng.integers(0, 4))
        anchor.rotation = np.round(np.array([[np.cos(quarter * np.pi / 2), -np.sin(quarter * np.pi / 2)],
                                             [np.sin(quarter * np.pi / 2), np.cos(quarter * np.pi / 2)]]))
        anchor.translation = rng.uniform([0.4, 0.4], [width - 0.4, depth - 0.4])

    # doors (with 0.9 m of free floor in front), windows with curtains, then furniture, then pictures
    for _ in range(int(rng.integers(1, 3))):
        w, h = rng.uniform(0.8, 1.0), rng.uniform(2.0, 2.15)
        try_place([SynthObject("door", [box((0, 0, 0), (w, 0.04, h)), box((w - 0.12, 0.04, 1.0), (w - 0.08, 0.08, 1.05), 1)])],
                  20, on_wall(0.01), margin=0.2, clearance=0.9)
    for _ in range(int(rng.integers(0 if scene_type == "bathroom" else 1, 4))):
        w, h, sill = rng.uniform(0.8, 1.6), rng.uniform(0.9, 1.4), rng.uniform(0.8, 1.0)
        items = [SynthObject("window", [box((0, 0, sill), (w, 0.02, sill + h)), box((-0.05, 0, sill - 0.05), (w + 0.05, 0.06, sill), 1),
                                        box((-0.05, 0, sill + h), (w + 0.05, 0.06, sill + h + 0.05), 1),
                                        box((-0.05, 0, sill), (0, 0.06, sill + h), 1), box((w, 0, sill), (w + 0.05, 0.06, sill + h), 1)])]
        if rng.random() < 0.7:  # a curtain panel over each side of the window
            panel, bottom, period = rng.uniform(0.3, 0.6), rng.uniform(0.02, sill - 0.1), rng.uniform(0.12, 0.2)
            for x0 in (-panel * 0.6, w - panel * 0.4):
                items.append(SynthObject("curtain", [sheet(x0, x0 + panel, bottom, sill + h + 0.15, 0.12, 0.03, period)]))
        try_place(items, 20, on_wall(0.0), margin=0.15)

    plan = [(kind, int(rng.integers(lo, hi + 1))) for kind, lo, hi in ROOM_TYPES[scene_type]]
    for kind, count in plan:
        for _ in range(count):
            items = _furniture(kind, rng)
            if try_place(items, 40, on_wall(0.0) if kind in AGAINST_WALL else free) and kind in ("table", "desk"):
                _chairs(items[0], kind, rng, objects, placed, width, depth)

    for _ in range(int(rng.integers(1, 4))):
        name = "picture" if rng.random() < 0.8 else "television"
        w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
        z = rng.uniform(1.2, 1.6)
        try_place([SynthObject(name, [box((0, 0, z), (w, 0.03, z + h)), box((0, 0.03, z), (w, 0.035, z + 0.02), 1)])], 20,
                  on_wall(0.0), margin=0.1, clearance=0.4)

    return SynthRoom(scene_type, (width, depth, height), objects, _camera_path(rng, width, depth, frames))


def _chairs(table: SynthObject, kind: str, rng: np.random.Generator, objects: list[SynthObject],
            placed: list[tuple[np.ndarray, np.ndarray]], width: float, depth: float) -> None:
    """Chairs facing a table's long sides (a desk: its front), kept if they fit."""
    lo, hi = table.bounds()
    centre = (lo[:2] + hi[:2]) / 2
    sides = [np.array([0.0, -1.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), np.array([1.0, 0.0])]
    if kind == "desk":
        sides = [table.rotation[:, 1]]
    for side in sides:
        if rng.random() < 0.3 and kind != "desk":
            continue
        chair = _furniture("chair", rng)[0]
        s = chair.local_bounds()[1][0]
        facing = -side  # the chair's +y points at the table
        chair.rotation = np.stack([np.array([facing[1], -facing[0]]), facing], axis=1)
        reach = np.abs(side) @ (hi[:2] - lo[:2]) / 2 + rng.uniform(0.02, 0.15)
        seat_centre = centre + side * (reach + s / 2)
        chair.translation = seat_centre - chair.rotation @ np.array([s / 2, s / 2])
        bounds = chair.bounds()
        inside = np.all(bounds[0][:2] >= 0.05) and bounds[1][0] <= width - 0.05 and bounds[1][1] <= depth - 0.05
        if inside and not _overlaps(bounds, placed, 0.01):
            chair.group = len(placed)
            placed.append(bounds)
            objects.append(chair)


def _camera_path(rng: np.random.Generator, width: float, depth: float, frames: int) -> np.ndarray:
    """Poses on an ellipse near the walls, looking across the room and down at the furniture."""
    centre = np.array([width / 2, depth / 2])
    radii = np.maximum([width / 2 - 1.0, depth / 2 - 1.0], 0.3)
    phase = rng.uniform(0, 2 * np.pi)
    poses = np.empty((frames, 4, 4))
    for i in range(frames):
        angle = phase + 2 * np.pi * i / frames
        position = np.r_[centre + radii * [np.cos(angle), np.sin(angle)], rng.uniform(1.3, 1.6)]
        yaw = angle + np.pi + rng.uniform(-0.7, 0.7)
        pitch = rng.uniform(0.35, 0.65)
        forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        poses[i] = np.eye(4)
        poses[i, :3, :3] = np.stack([right, down, forward], axis=1)
        poses[i, :3, 3] = position
    return poses


# --------------------------------------------------------------------------------------------
# Mesh, colours, frames, files
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthMesh:
    """A room as one mesh: what the scan folder's PLY files hold."""

    xyz: np.ndarray  # (N,3) float32
    rgb: np.ndarray  # (N,3) uint8
    faces: np.ndarray  # (F,3) int32
    nyu40: np.ndarray  # (N,) uint16
    instance: np.ndarray  # (N,) int32, index into SynthRoom.objects


def _texture(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor per vertex: plain, stripes, checks or blotches, drawn per object part."""
    kind = int(rng.integers(0, 4))
    amplitude = rng.uniform(0.08, 0.3)
    if kind == 0:
        return np.ones(len(xyz))
    if kind == 1:
        direction = rng.normal(size=3)
        phase = xyz @ (direction / np.linalg.norm(direction)) / rng.uniform(0.04, 0.4)
        return 1 + amplitude * np.sign(np.sin(2 * np.pi * phase))
    if kind == 2:
        cells = np.floor(xyz / rng.uniform(0.08, 0.4)).astype(np.int64).sum(axis=1)
        return 1 + amplitude * (2 * (cells % 2) - 1)
    waves = sum(np.sin(xyz @ rng.normal(scale=rng.uniform(3, 15), size=3) + rng.uniform(0, 2 * np.pi)) for _ in range(3))
    return 1 + amplitude * waves / 3


def build_mesh(room: SynthRoom, rng: np.random.Generator, resolution: float, jitter: float = 0.002) -> SynthMesh:
    """Mesh every object at `resolution` metres, colour it from the shared palette with a
    texture, and add `jitter` metres of sensor-like noise to the vertex positions."""
    xyz, faces, nyu40, instance, rgb = [], [], [], [], []
    offset = 0
    for i, obj in enumerate(room.objects):
        vertices, obj_faces, roles = obj.mesh(resolution)
        colours = PALETTE[rng.integers(0, len(PALETTE), size=2)]
        colour = np.empty((len(vertices), 3))
        for role in (0, 1):
            mine = roles == role
            colour[mine] = colours[role] * _texture(vertices[mine], rng)[:, None]
        xyz.append(vertices)
        faces.append(obj_faces + offset)
        rgb.append(colour)
        nyu40.append(np.full(len(vertices), NYU40[obj.name], np.uint16))
        instance.append(np.full(len(vertices), i, np.int32))
        offset += len(vertices)
    xyz = np.concatenate(xyz)
    xyz += rng.normal(scale=jitter, size=xyz.shape)
    rgb = np.concatenate(rgb) + rng.normal(scale=6.0, size=(len(xyz), 3))
    return SynthMesh(xyz.astype(np.float32), np.clip(np.rint(rgb), 0, 255).astype(np.uint8),
                     np.concatenate(faces).astype(np.int32), np.concatenate(nyu40), np.concatenate(instance))


def intrinsic_for(width: int, height: int) -> np.ndarray:
    """A ScanNet-like pinhole (58 degrees across) for a width x height image."""
    return np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1.0]])


def render_frames(mesh: SynthMesh, camera_to_world: np.ndarray, intrinsic: np.ndarray, width: int,
                  height: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour (frames,H,W,3) uint8 — each pixel its face's mean vertex colour, shaded by how
    squarely the face is seen — and depth (frames,H,W) uint16 millimetres (0 = nothing hit).

    All frames are cast in one call of a raycaster built once per room: building the BVH
    once instead of per frame is what keeps a room at a few seconds."""
    depth, face = MeshRaycaster(mesh.xyz, mesh.faces).render(
        np.linalg.inv(camera_to_world), intrinsic, width, height)
    missed = face < 0
    forward = camera_to_world[:, :3, 2]
    corners = mesh.xyz[mesh.faces].astype(np.float64)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    face_colour = mesh.rgb[mesh.faces].astype(np.float64).mean(axis=1)
    face = np.where(missed, 0, face)
    shade = 0.55 + 0.45 * np.abs(np.einsum("fhwc,fc->fhw", normal[face], forward))
    colour = np.where(missed[..., None], 0, np.clip(np.rint(face_colour[face] * shade[..., None]), 0, 255))
    return colour.astype(np.uint8), np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{v:f}" for v in row) + "\n" for row in matrix)


def write_scene(scene_dir: Path, scene_id: str, room: SynthRoom, mesh: SynthMesh, width: int, height: int) -> None:
    """The ScanNet v2 scan folder of `scene_id`: meshes, meta .txt and exported frames."""
    alpha = np.full(len(mesh.xyz), 255, np.uint8)
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.ply", mesh.xyz, mesh.rgb, mesh.faces, alpha=alpha)
    write_ply(scene_dir / f"{scene_id}_vh_clean_2.labels.ply", mesh.xyz, mesh.rgb, mesh.faces, alpha=alpha, label=mesh.nyu40)
    k = intrinsic_for(width, height)
    frames = len(room.camera_to_world)
    info = {
        "axisAlignment": " ".join(f"{v:f}" for v in np.eye(4).ravel()),
        "colorHeight": height, "colorWidth": width, "depthHeight": height, "depthWidth": width,
        "fx_color": f"{k[0, 0]:f}", "fx_depth": f"{k[0, 0]:f}", "fy_color": f"{k[1, 1]:f}", "fy_depth": f"{k[1, 1]:f}",
        "mx_color": f"{k[0, 2]:f}", "mx_depth": f"{k[0, 2]:f}", "my_color": f"{k[1, 2]:f}", "my_depth": f"{k[1, 2]:f}",
        "numColorFrames": frames, "numDepthFrames": frames, "sceneType": room.scene_type.title(),
    }
    (scene_dir / f"{scene_id}.txt").write_text("".join(f"{key} = {value}\n" for key, value in info.items()))
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scene_dir / sub).mkdir()
    k4 = np.eye(4)
    k4[:3, :3] = k
    for name in ("intrinsic_color", "intrinsic_depth"):
        (scene_dir / "intrinsic" / f"{name}.txt").write_text(_matrix_text(k4))
    for name in ("extrinsic_color", "extrinsic_depth"):
        (scene_dir / "intrinsic" / f"{name}.txt").write_text(_matrix_text(np.eye(4)))

    colours, depths = render_frames(mesh, room.camera_to_world, k, width, height)
    for i, (pose, colour, depth) in enumerate(zip(room.camera_to_world, colours, depths)):
        Image.fromarray(colour).save(scene_dir / "color" / f"{i}.jpg", quality=90)
        Image.fromarray(depth).save(scene_dir / "depth" / f"{i}.png", compress_level=1)
        (scene_dir / "pose" / f"{i}.txt").write_text(_matrix_text(pose))


def generate_scene(scene_dir: str | Path, index: int, seed: int = 0, resolution: float = 0.04, min_vertices: int = 50_000,
                   frames: int = 30, width: int = 320, height: int = 240) -> SynthMesh:
    """Generate and write scene `index` of the dataset of `seed`. The grid is refined below
    `resolution` until the mesh has `min_vertices` (0: take `resolution` as it is). The folder
    is written beside its final place and then renamed, so it is never seen half-written."""
    rng = np.random.default_rng([seed, index])
    room = make_room(rng, frames)
    colour_seed = int(rng.integers(0, 2**63))
    while True:  # colours drawn from the same stream whatever the number of refinements
        mesh = build_mesh(room, np.random.default_rng(colour_seed), resolution)
        if len(mesh.xyz) >= min_vertices:
            break
        resolution *= 0.97 * np.sqrt(len(mesh.xyz) / min_vertices)
    scene_dir = Path(scene_dir)
    partial = scene_dir.with_name(f".{scene_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_scene(partial, scene_dir.name, room, mesh, width, height)
    shutil.rmtree(scene_dir, ignore_errors=True)
    partial.rename(scene_dir)
    return mesh


def generate(out_dir: str | Path, scenes: int = 10, seed: int = 0, val_fraction: float = 0.2, **scene_options) -> list[str]:
    """Write `scenes` rooms as `out_dir/scans/sceneXXXX_00/` plus `scannetv2_train.txt` and
    `scannetv2_val.txt` (the last `val_fraction` of the scenes, at least one when there are two
    or more). `scene_options` go to `generate_scene` (resolution, min_vertices, frames, width,
    height). Returns the scene ids."""
    if scenes < 1:
        raise ValueError(f"scenes must be >= 1, got {scenes}")
    out_dir = Path(out_dir)
    ids = [f"scene{i:04d}_00" for i in range(scenes)]
    for i, scene_id in enumerate(ids):
        generate_scene(out_dir / "scans" / scene_id, i, seed, **scene_options)
    n_val = max(1, round(scenes * val_fraction)) if scenes > 1 else 0
    (out_dir / "scannetv2_train.txt").write_text("".join(f"{s}\n" for s in ids[: scenes - n_val]))
    (out_dir / "scannetv2_val.txt").write_text("".join(f"{s}\n" for s in ids[scenes - n_val:]))
    return ids


def main(argv: list[str] | None = None) -> int:
    """`python -m preprocess synth --out DIR --scenes N --seed S`."""
    parser = argparse.ArgumentParser(prog="python -m preprocess synth",
                                     description="generate the default dataset (ScanNet v2 layout)")
    parser.add_argument("--out", required=True, help="dataset root to write (scans/ and split files)")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--resolution", type=float, default=0.04, help="mesh grid spacing in metres")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of the scenes in the val split")
    args = parser.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    ids = generate(args.out, scenes=args.scenes, seed=args.seed, val_fraction=args.val_fraction, frames=args.frames,
                   resolution=args.resolution)
    print(f"wrote {len(ids)} scenes to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
