"""A room: its layout (walls, floor, wall items and furniture without overlaps, the camera
path) and its mesh, coloured from one palette shared by every class with per-object stripes,
checks or blotches, so colour alone does not tell the class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preprocess.synth.furniture import NYU40, make_furniture
from preprocess.synth.shapes import SynthObject, box, rect, sheet

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
    camera_to_world: np.ndarray  # (poses,4,4) OpenCV camera poses of the scan's camera stream


def make_room(rng: np.random.Generator, poses: int = 60) -> SynthRoom:
    """Lay out one room (wall items, then furniture without overlapping bounding boxes) and the
    `poses` camera poses of its scan."""
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
            top = sill + h + 0.15
            for x0 in (-panel * 0.6, w - panel * 0.4):  # each on a rod fixed to the wall, as a real one hangs
                items.append(SynthObject("curtain", [sheet(x0, x0 + panel, bottom, top, 0.12, 0.03, period),
                                                     box((x0, 0, top), (x0 + panel, 0.16, top + 0.03), 1)]))
        try_place(items, 20, on_wall(0.0), margin=0.15)

    plan = [(kind, int(rng.integers(lo, hi + 1))) for kind, lo, hi in ROOM_TYPES[scene_type]]
    for kind, count in plan:
        for _ in range(count):
            items = make_furniture(kind, rng)
            if try_place(items, 40, on_wall(0.0) if kind in AGAINST_WALL else free) and kind in ("table", "desk"):
                _chairs(items[0], kind, rng, objects, placed, width, depth)

    for _ in range(int(rng.integers(1, 4))):
        name = "picture" if rng.random() < 0.8 else "television"
        w, h = rng.uniform(0.3, 1.0), rng.uniform(0.3, 0.8)
        z = rng.uniform(1.2, 1.6)
        try_place([SynthObject(name, [box((0, 0, z), (w, 0.03, z + h)), box((0, 0.03, z), (w, 0.035, z + 0.02), 1)])], 20,
                  on_wall(0.0), margin=0.1, clearance=0.4)

    return SynthRoom(scene_type, (width, depth, height), objects, _scan_path(rng, width, depth, poses))


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
        chair = make_furniture("chair", rng)[0]
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


def _scan_path(rng: np.random.Generator, width: float, depth: float, poses: int) -> np.ndarray:
    """A hand-held scan's camera stream: one loop about 1 m inside the walls at chest height,
    turning between the nearest wall and the room's centre, sweeping left and right and
    between the upper walls and the floor, as a person scanning a room does."""
    centre = np.array([width / 2, depth / 2])
    radii = np.maximum([width / 2 - 1.0, depth / 2 - 1.0], 0.3)
    phase, p_height, p_turn, p_sweep, p_pitch = rng.uniform(0, 2 * np.pi, 5)
    t = np.arange(poses) / poses
    angle = phase + 2 * np.pi * t
    position = np.c_[centre + radii * np.c_[np.cos(angle), np.sin(angle)], 1.45 + 0.18 * np.sin(6 * np.pi * t + p_height)]
    facing_centre = 0.5 * (1 + np.cos(8 * np.pi * t + p_turn))  # 1: towards the centre, 0: the nearest wall
    yaw = angle + np.pi * facing_centre + 0.7 * np.sin(18 * np.pi * t + p_sweep) + rng.normal(0, 0.05, poses)
    pitch = 0.45 + 0.35 * np.sin(10 * np.pi * t + p_pitch) + rng.normal(0, 0.03, poses)  # radians below level
    forward = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)], axis=1)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    down = np.cross(forward, right)
    camera_to_world = np.tile(np.eye(4), (poses, 1, 1))
    camera_to_world[:, :3, :3] = np.stack([right, down, forward], axis=2)
    camera_to_world[:, :3, 3] = position
    return camera_to_world


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


def build_mesh(room: SynthRoom, rng: np.random.Generator, resolution: float) -> SynthMesh:
    """Mesh every object at `resolution` metres and colour it from the shared palette with a
    texture: the room as it is, before a sensor sees it (noise comes from the scan)."""
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
    rgb = np.concatenate(rgb) + rng.normal(scale=6.0, size=(len(xyz), 3))
    return SynthMesh(xyz.astype(np.float32), np.clip(np.rint(rgb), 0, 255).astype(np.uint8),
                     np.concatenate(faces).astype(np.int32), np.concatenate(nyu40), np.concatenate(instance))
