"""Mesh primitives and the objects built from them.

Primitives live in object-local coordinates (x along the object's width, y its depth with the
back at y = 0, z up) and are meshed as grids of about `res` metres, so every surface has
ScanNet's vertex density whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

