"""The catalogue: every object's nyu40 id, and furniture of each kind built from primitives
with randomised dimensions (what stands on a piece, a bed's pillows or a desk's lamp, comes
with it)."""

from __future__ import annotations

import numpy as np

from preprocess.synth.shapes import Prim, SynthObject, box, cylinder, sheet
from shared.classes import SCANNET_NAMES, SCANNET_NYU40_IDS

# nyu40 ids: the benchmark's 20 classes and the props ScanNet annotates but does not evaluate
NYU40 = dict(zip(SCANNET_NAMES, SCANNET_NYU40_IDS)) | {
    "pillow": 18, "books": 23, "television": 25, "box": 29, "night stand": 32, "lamp": 35,
}


def _legs(w: float, d: float, h: float, t: float, inset: float, rng: np.random.Generator, role: int = 1) -> list[Prim]:
    xs, ys = (inset, w - inset - t), (inset, d - inset - t)
    if rng.random() < 0.5:
        return [box((x, y, 0), (x + t, y + t, h), role) for x in xs for y in ys]
    return [cylinder(x + t / 2, y + t / 2, 0, h, t / 2, role) for x in xs for y in ys]


def make_furniture(kind: str, rng: np.random.Generator) -> list[SynthObject]:
    """One piece of furniture (and what stands on it) in local coordinates, back at y = 0."""
    u = rng.uniform
    if kind == "bed":
        w, d, top = u(1.0, 1.9), u(1.95, 2.2), u(0.5, 0.6)
        objs = [SynthObject("bed", [box((0, 0, 0), (w, d, 0.3), 1), box((0.03, 0.08, 0.3), (w - 0.03, d - 0.02, top)),
                                    box((0, 0, 0), (w, 0.08, u(0.9, 1.2)), 1)])]
        for x in ([0.1] if w < 1.4 else [0.1, w / 2 + 0.05]):  # lying on the mattress
            objs.append(SynthObject("pillow", [box((x, 0.15, top), (x + min(0.6, w / 2 - 0.15), 0.55, top + 0.14))]))
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
        curtain = SynthObject("shower curtain", [  # on a rod held by two brackets from the wall
            sheet(0, w, h + 0.1 if kind == "bathtub" else 0.05, 2.0, d + 0.03, 0.03, 0.2), box((0, d, 2.0), (w, d + 0.06, 2.03), 1),
            box((0, 0, 2.0), (0.03, d, 2.03), 1), box((w - 0.03, 0, 2.0), (w, d, 2.03), 1)])
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
