"""Class tables: raw dataset ids -> contiguous training ids (-1 = ignore).

ScanNet v2 evaluates 20 of the nyu40 classes; nuScenes lidarseg evaluates 16 merged classes
of its 32 raw ones; a dataset of your own lists its classes in its pipeline file. Everything
else maps to IGNORE and is dropped before any metric. Which dataset uses which table is its
entry's business (shared/datasets.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.viz import distinct_palette

IGNORE = -1


@dataclass(frozen=True)
class ClassTable:
    """Names of the evaluated classes and a lookup table from raw ids to them."""

    names: tuple[str, ...]
    raw_to_train: np.ndarray  # int16 lookup, index = raw id
    palette: np.ndarray  # (C, 3) u8, the benchmark's own colours, in `names` order

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def map_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw ids -> training ids; ids outside the table become IGNORE."""
        raw = np.asarray(raw).astype(np.int64)
        out = np.full(raw.shape, IGNORE, dtype=np.int16)
        inside = (raw >= 0) & (raw < len(self.raw_to_train))
        out[inside] = self.raw_to_train[raw[inside]]
        return out


def _table(names: tuple[str, ...], raw_ids: list[tuple[int, ...]], size: int,
           colours: tuple[tuple[int, int, int], ...] | np.ndarray) -> ClassTable:
    lut = np.full(size, IGNORE, dtype=np.int16)
    for train_id, ids in enumerate(raw_ids):
        lut[list(ids)] = train_id
    lut.setflags(write=False)
    palette = np.array(colours, dtype=np.uint8)
    palette.setflags(write=False)
    return ClassTable(names, lut, palette)


SCANNET_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)
# nyu40 ids of the ScanNet v2 benchmark classes, in SCANNET_NAMES order.
SCANNET_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

# ScanNet's colours of those nyu40 ids (ScanNet's BenchmarkScripts util `create_color_palette`).
SCANNET_COLOURS = (
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
    (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
    (247, 182, 210), (219, 219, 141), (255, 127, 14), (158, 218, 229), (44, 160, 44), (112, 128, 144),
    (227, 119, 194), (82, 84, 163),
)

SCANNET = _table(SCANNET_NAMES, [(i,) for i in SCANNET_NYU40_IDS], size=41, colours=SCANNET_COLOURS)

NUSCENES_RAW_NAMES = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle",
    "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle",
    "vehicle.trailer", "vehicle.truck", "flat.driveable_surface", "flat.other", "flat.sidewalk",
    "flat.terrain", "static.manmade", "static.other", "static.vegetation", "vehicle.ego",
)
NUSCENES_NAMES = (
    "barrier", "bicycle", "bus", "car", "construction vehicle", "motorcycle", "pedestrian",
    "traffic cone", "trailer", "truck", "driveable surface", "other flat", "sidewalk", "terrain",
    "manmade", "vegetation",
)
# Raw lidarseg ids merged into each evaluation class (the official lidarseg challenge mapping).
NUSCENES_RAW_IDS = [
    (9,), (14,), (15, 16), (17,), (18,), (21,), (2, 3, 4, 6), (12,), (22,), (23,),
    (24,), (25,), (26,), (27,), (28,), (30,),
]
# The nuScenes devkit's colours (nuscenes/utils/color_map.py) of each class's main raw class
# (bus: vehicle.bus.rigid, pedestrian: human.pedestrian.adult).
NUSCENES_COLOURS = (
    (112, 128, 144), (220, 20, 60), (255, 69, 0), (255, 158, 0), (233, 150, 70), (255, 61, 99), (0, 0, 230),
    (47, 79, 79), (255, 140, 0), (255, 99, 71), (0, 207, 191), (175, 0, 75), (75, 0, 75), (112, 180, 60),
    (222, 184, 135), (0, 175, 0),
)
NUSCENES = _table(NUSCENES_NAMES, NUSCENES_RAW_IDS, size=len(NUSCENES_RAW_NAMES), colours=NUSCENES_COLOURS)


def user_table(names: tuple[str, ...]) -> ClassTable:
    """The classes a pipeline file lists for its own data: raw id i is class i (0..C-1); any
    other id (-1, 255, ...) is IGNORE; colours spread by hue, as for open-vocabulary names."""
    return _table(tuple(names), [(i,) for i in range(len(names))], size=len(names), colours=distinct_palette(len(names)))
