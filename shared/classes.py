"""Class tables: raw dataset ids -> contiguous training ids (-1 = ignore).

ScanNet v2 evaluates 20 of the nyu40 classes; nuScenes lidarseg evaluates 16 merged classes
of its 32 raw ones; a dataset of your own lists its classes in its pipeline file. Everything
else maps to IGNORE and is dropped before any metric. Which dataset uses which table is its
entry's business (shared/datasets.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = -1


@dataclass(frozen=True)
class ClassTable:
    """Names of the evaluated classes and a lookup table from raw ids to them."""

    names: tuple[str, ...]
    raw_to_train: np.ndarray  # int16 lookup, index = raw id

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


def _table(names: tuple[str, ...], raw_ids: list[tuple[int, ...]], size: int) -> ClassTable:
    lut = np.full(size, IGNORE, dtype=np.int16)
    for train_id, ids in enumerate(raw_ids):
        lut[list(ids)] = train_id
    lut.setflags(write=False)
    return ClassTable(names, lut)


SCANNET_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)
# nyu40 ids of the ScanNet v2 benchmark classes, in SCANNET_NAMES order.
SCANNET_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

SCANNET = _table(SCANNET_NAMES, [(i,) for i in SCANNET_NYU40_IDS], size=41)

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
NUSCENES = _table(NUSCENES_NAMES, NUSCENES_RAW_IDS, size=len(NUSCENES_RAW_NAMES))


def user_table(names: tuple[str, ...]) -> ClassTable:
    """The classes a pipeline file lists for its own data: raw id i is class i (0..C-1); any
    other id (-1, 255, ...) is IGNORE."""
    return _table(tuple(names), [(i,) for i in range(len(names))], size=len(names))
