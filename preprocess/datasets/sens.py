"""ScanNet's raw `.sens` recordings (the SensReader format), read lazily.

Opening a file reads its header and walks the frame records once to note where each frame's
compressed colour and depth bytes lie; pixels are decoded only when a view asks for them, so
a scene's thousands of frames cost one pass of small seeks, not gigabytes of decoding.

Layout (little-endian): u32 version (4); u64 length + sensor name; 4x4 f32 colour intrinsic,
colour extrinsic, depth intrinsic, depth extrinsic; i32 colour and depth compression; u32
colour width, height, depth width, height; f32 depth shift; u64 frame count; then per frame
a 4x4 f32 camera-to-world, u64 colour and depth timestamps, u64 colour and depth byte counts
and those bytes.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import DatasetError

SENS_VERSION = 4
COLOR_COMPRESSION = {0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {0: "raw_ushort", 1: "zlib_ushort"}
_FRAME_HEAD = struct.Struct("<16f4Q")  # pose, timestamps, byte counts


@dataclass(frozen=True)
class SensFile:
    """The header of a `.sens` file and an index of where every frame's bytes lie."""

    path: Path
    sensor_name: str
    intrinsic_color: np.ndarray  # (4,4)
    extrinsic_color: np.ndarray  # (4,4)
    intrinsic_depth: np.ndarray  # (4,4)
    extrinsic_depth: np.ndarray  # (4,4)
    color_compression: str
    depth_compression: str
    color_width: int
    color_height: int
    depth_width: int
    depth_height: int
    depth_shift: float  # raw depth units per metre (1000 for ScanNet)
    camera_to_world: np.ndarray  # (num_frames,4,4) float64; non-finite where tracking failed
    timestamps: np.ndarray  # (num_frames,2) uint64: colour, depth
    color_span: np.ndarray  # (num_frames,2) int64: byte offset, byte count
    depth_span: np.ndarray  # (num_frames,2) int64

    @property
    def num_frames(self) -> int:
        return len(self.camera_to_world)

    def color(self, frame: int) -> np.ndarray:
        """Frame's colour image, (color_height, color_width, 3) uint8."""
        data = self._bytes(self.color_span[frame])
        try:
            if self.color_compression == "raw":
                return np.frombuffer(data, np.uint8).reshape(self.color_height, self.color_width, 3).copy()
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DatasetError(
                f"{self.path}: colour of frame {frame} cannot be decoded ({e}); download it again"
            ) from None

    def depth(self, frame: int) -> np.ndarray:
        """Frame's depth in metres, (depth_height, depth_width) float32, 0 = no measurement."""
        data = self._bytes(self.depth_span[frame])
        try:
            if self.depth_compression == "zlib_ushort":
                data = zlib.decompress(data)
            raw = np.frombuffer(data, "<u2").reshape(self.depth_height, self.depth_width)
        except (zlib.error, ValueError) as e:
            raise DatasetError(
                f"{self.path}: depth of frame {frame} cannot be decoded ({e}); download it again"
            ) from None
        return raw.astype(np.float32) / np.float32(self.depth_shift)

    def _bytes(self, span: np.ndarray) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(int(span[0]))
            data = f.read(int(span[1]))
        if len(data) != span[1]:
            raise DatasetError(f"{self.path}: frame data cut short; the .sens file is truncated, download it again")
        return data


def open_sens(path: str | os.PathLike) -> SensFile:
    """Read a `.sens` header and index its frames (no pixels are decoded)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: .sens file not found; download it with ScanNet's download script (--type .sens)")
    try:
        with open(path, "rb") as f:
            return _index(f, path)
    except (struct.error, ValueError) as e:
        raise DatasetError(f"{path}: truncated or corrupt .sens file ({e}); download it again") from None


def _read(f, fmt: str) -> tuple:
    s = struct.Struct(fmt)
    data = f.read(s.size)
    if len(data) != s.size:
        raise ValueError("unexpected end of file")
    return s.unpack(data)


def _index(f, path: Path) -> SensFile:
    end = f.seek(0, os.SEEK_END)
    f.seek(0)
    (version,) = _read(f, "<I")
    if version != SENS_VERSION:
        raise DatasetError(f"{path}: .sens version {version}, expected {SENS_VERSION}; not a ScanNet v2 recording")
    (name_len,) = _read(f, "<Q")
    # Counts are checked against the bytes left before they size a read or an array: a corrupt
    # count must end in this module's error, not in a MemoryError or an overflow.
    if name_len > end - f.tell():
        raise ValueError(f"sensor name of {name_len} bytes is longer than the file")
    sensor_name = f.read(name_len).decode("utf-8", errors="replace")
    matrices = [np.array(_read(f, "<16f"), dtype=np.float64).reshape(4, 4) for _ in range(4)]
    color_code, depth_code = _read(f, "<2i")
    color_w, color_h, depth_w, depth_h = _read(f, "<4I")
    (depth_shift,) = _read(f, "<f")
    (num_frames,) = _read(f, "<Q")
    if color_code not in COLOR_COMPRESSION or depth_code not in DEPTH_COMPRESSION:
        raise DatasetError(
            f"{path}: unsupported compression (colour {color_code}, depth {depth_code}); supported are colour "
            f"{COLOR_COMPRESSION} and depth {DEPTH_COMPRESSION}: export frames with ScanNet's SensReader instead"
        )
    if not all(np.isfinite(m).all() for m in matrices):
        raise DatasetError(f"{path}: camera intrinsics or extrinsics hold NaN or infinite entries; download it again")
    if not (np.isfinite(depth_shift) and depth_shift >= 1):  # raw units per metre: 1000 (mm) in ScanNet
        raise DatasetError(f"{path}: depth shift {depth_shift} is not a depth unit (>= 1 per metre); download it again")
    if num_frames * _FRAME_HEAD.size > end - f.tell():
        raise ValueError(f"{num_frames} frames cannot fit in the file")
    poses = np.empty((num_frames, 4, 4), dtype=np.float64)
    times = np.empty((num_frames, 2), dtype=np.uint64)
    color_span = np.empty((num_frames, 2), dtype=np.int64)
    depth_span = np.empty((num_frames, 2), dtype=np.int64)
    for i in range(num_frames):  # one small read and a seek per frame: the data stays on disk
        head = f.read(_FRAME_HEAD.size)
        if len(head) != _FRAME_HEAD.size:
            raise ValueError(f"frame {i} of {num_frames} missing")
        values = _FRAME_HEAD.unpack(head)
        if values[18] + values[19] > end - f.tell():
            raise ValueError(f"frame {i} extends past the end of the file")
        poses[i] = np.reshape(values[:16], (4, 4))
        times[i] = values[16:18]
        color_span[i] = (f.tell(), values[18])
        depth_span[i] = (color_span[i, 0] + values[18], values[19])
        f.seek(int(depth_span[i, 0] + values[19]))
    return SensFile(
        path=path,
        sensor_name=sensor_name,
        intrinsic_color=matrices[0],
        extrinsic_color=matrices[1],
        intrinsic_depth=matrices[2],
        extrinsic_depth=matrices[3],
        color_compression=COLOR_COMPRESSION[color_code],
        depth_compression=DEPTH_COMPRESSION[depth_code],
        color_width=color_w,
        color_height=color_h,
        depth_width=depth_w,
        depth_height=depth_h,
        depth_shift=float(depth_shift),
        camera_to_world=poses,
        timestamps=times,
        color_span=color_span,
        depth_span=depth_span,
    )
