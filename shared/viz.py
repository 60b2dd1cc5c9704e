"""Pictures both programs draw: class palettes, oblique perspective renders of a scan made with
the project's own ray caster (shared/render.py: open3d's RaycastingScene, no window, no GPU),
and figures of several panels with a legend or a colour bar.

A mesh is rendered as its triangles, each pixel taking the colour of the nearest corner of the
face it hits; a point cloud as small squares facing the camera (splats), each the size of the
typical gap between neighbouring points. Faces (or points, where normals are known) that face
away from the camera are left out, so the near walls of a room do not hide it: the view looks
in over them, like a cut-away drawing. Pixels are shaded by the angle between the surface and
the view, which is what makes shape readable where colours are flat (labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNLABELLED = np.array([128, 128, 128], dtype=np.uint8)  # ignore / unseen points
BACKGROUND = 255
CORRECT = np.array([200, 200, 200], dtype=np.uint8)  # light grey: the mistakes stand out in red
WRONG = np.array([215, 50, 40], dtype=np.uint8)


# ----------------------------------------------------------------------------- colours
def distinct_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """(C, 3) u8 colours, hues spread by the golden angle so neighbouring ids differ, for classes
    without a benchmark palette (open-vocabulary names)."""
    hue = (seed * 0.13 + np.arange(num_classes) * 0.618033988749895) % 1.0
    saturation = np.where(np.arange(num_classes) % 2, 0.55, 0.8)
    value = np.where(np.arange(num_classes) % 3 == 2, 0.7, 0.92)
    i = np.floor(hue * 6).astype(int) % 6
    f = hue * 6 - np.floor(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    rgb = np.choose(i[None], [np.stack(c) for c in ((value, t, p), (q, value, p), (p, value, t),
                                                     (p, q, value), (t, p, value), (value, p, q))])
    return (rgb.T * 255).round().astype(np.uint8)


def palette_for(classes: tuple[str, ...] | list[str], known: tuple[str, ...] | list[str], known_palette: np.ndarray) -> np.ndarray:
    """(K, 3) u8: a known class keeps its colour, another name gets a distinct one."""
    fresh = iter(c for c in distinct_palette(len(classes) + len(known)) if not (known_palette == c).all(axis=1).any())
    return np.array([known_palette[list(known).index(n)] if n in known else next(fresh) for n in classes], dtype=np.uint8)


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(N, 3) u8 colours per label; labels outside [0, len(palette)) are grey."""
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(palette))
    out = np.tile(UNLABELLED, (len(labels), 1))
    out[valid] = np.asarray(palette, dtype=np.uint8)[labels[valid]]
    return out


def colour_values(values: np.ndarray, cmap: str = "coolwarm", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(N, 3) u8 colours of scalars on a matplotlib colour map, from vmin (default: the minimum) to vmax."""
    import matplotlib

    lo = float(np.min(values)) if vmin is None else vmin
    hi = float(np.max(values)) if vmax is None else vmax
    scaled = np.clip((np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[:, :3] * 255).round().astype(np.uint8)


def correct_wrong(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 3) u8: light grey where the prediction equals the ground truth, red where not, dark
    grey where the ground truth is ignored."""
    out = np.where((pred == gt)[:, None], CORRECT, WRONG)
    out[gt < 0] = UNLABELLED
    return out


# ----------------------------------------------------------------------------- camera
@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world_to_camera (4, 4) in OpenCV's axes (x right, y down, z forward),
    intrinsic (3, 3), image size in pixels."""

    world_to_camera: np.ndarray
    intrinsic: np.ndarray
    width: int
    height: int

    @property
    def position(self) -> np.ndarray:
        R, t = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -R.T @ t


def oblique_camera(xyz: np.ndarray, width: int = 640, azimuth: float = 225.0, elevation: float = 50.0,
                   fov: float = 40.0, margin: float = 0.03) -> Camera:
    """A camera looking down at the middle of `xyz` (z up) from `azimuth` degrees (0 = from +x,
    counter-clockwise; 225 = from the south-west corner) and `elevation` degrees above the
    horizon, far enough that the whole scan fits; the image is `width` pixels wide and as high
    as the framed scan needs (plus `margin` of the width on each side)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = (lo + hi) / 2
    radius = max(float(np.linalg.norm(hi - lo)) / 2, 1e-6)
    a, e = np.radians(azimuth), np.radians(elevation)
    towards = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])  # from the centre to the eye
    eye = centre + towards * radius / np.sin(np.radians(fov) / 2)
    forward = -towards
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3], world_to_camera[:3, 3] = R, -R @ eye
    # Frame the scan: normalised image coordinates of its points (a sample), then the focal length
    # and principal point that map their extent onto the image.
    sample = xyz[:: max(1, len(xyz) // 20000)]
    cam = (sample - eye) @ R.T
    uv = cam[:, :2] / np.maximum(cam[:, 2:3], 1e-6)
    (u0, v0), (u1, v1) = uv.min(axis=0), uv.max(axis=0)
    inner = width * (1 - 2 * margin)
    focal = inner / max(u1 - u0, 1e-9)
    height = int(np.ceil((v1 - v0) * focal + 2 * margin * width))
    intrinsic = np.array([[focal, 0, margin * width - u0 * focal], [0, focal, margin * width - v0 * focal], [0, 0, 1]])
    return Camera(world_to_camera, intrinsic, int(width), max(height, 1))


# ----------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class View:
    """What a camera sees of a scan: the point (or vertex) at each pixel (-1: background), a
    shading factor in [0, 1] from the angle between the surface and the ray, and for a mesh the
    hit face's corners with the hit's barycentric weights (to blend colours across a face)."""

    index: np.ndarray  # (H, W) int64
    shade: np.ndarray  # (H, W) f32
    corners: np.ndarray | None = None  # (H, W, 3) int64 vertex ids of the face hit
    weights: np.ndarray | None = None  # (H, W, 3) f32 barycentric weights of the hit

    def image(self, colours: np.ndarray, smooth: bool = False, ambient: float = 0.45) -> np.ndarray:
        """(H, W, 3) u8 picture of per-point `colours` (N, 3), shaded, white background;
        `smooth` blends a mesh's vertex colours across each face (photographs), else every pixel
        takes its nearest vertex's colour (labels keep their exact colours)."""
        seen = self.index >= 0
        colours = np.asarray(colours, dtype=np.float32)
        if smooth and self.corners is not None:
            value = (colours[self.corners[seen]] * self.weights[seen][..., None]).sum(axis=1)
        else:
            value = colours[self.index[seen]]
        out = np.full(self.index.shape + (3,), BACKGROUND, dtype=np.uint8)
        light = ambient + (1 - ambient) * self.shade[seen][:, None]
        out[seen] = np.clip(np.rint(value * light), 0, 255).astype(np.uint8)
        return out


def render_view(xyz: np.ndarray, camera: Camera, faces: np.ndarray | None = None, normals: np.ndarray | None = None,
                splat: float | None = None, cull: bool = True) -> View:
    """Ray-cast `camera` at a mesh (`faces`) or at the points as splats (side `splat` metres;
    default: 2.5x the median gap to the nearest neighbour). `cull` leaves out faces, or points
    with `normals`, that face away from the camera."""
    from shared.render import MeshRaycaster

    xyz = np.asarray(xyz, dtype=np.float64)
    eye = camera.position
    if faces is not None and len(faces):
        faces = np.asarray(faces, dtype=np.int64)
        corners = xyz[faces]
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        keep = ((normal * (corners.mean(axis=1) - eye)).sum(axis=1) <= 0) if cull else np.ones(len(faces), bool)
        kept = np.flatnonzero(keep)
        vertices, triangles, owner = xyz, faces[kept], None
    else:
        R = camera.world_to_camera[:3, :3]
        keep = np.ones(len(xyz), bool)
        if cull and normals is not None:
            keep = (np.asarray(normals) * (xyz - eye)).sum(axis=1) <= 0
        kept = np.flatnonzero(keep)
        half = (splat if splat is not None else 2.5 * point_spacing(xyz)) / 2
        offsets = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * half
        square = offsets[:, :1] * R[0] + offsets[:, 1:] * R[1]  # (4, 3) in the image plane
        vertices = (xyz[kept, None, :] + square[None]).reshape(-1, 3)
        base = 4 * np.arange(len(kept))[:, None]
        triangles = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=0)
        owner = np.concatenate([kept, kept])
    empty = View(np.full((camera.height, camera.width), -1, np.int64), np.zeros((camera.height, camera.width), np.float32))
    if not len(triangles):
        return empty
    caster = MeshRaycaster(vertices, triangles)
    _, face = caster.render(camera.world_to_camera, camera.intrinsic, camera.width, camera.height)
    hit = face >= 0
    index = np.full(face.shape, -1, np.int64)
    shade = np.zeros(face.shape, np.float32)
    rays = _pixel_rays(camera)[hit]
    if owner is None:  # a mesh: the corner with the largest barycentric weight of the hit
        tri = triangles[face[hit]]
        weights = _barycentric(vertices[tri], eye, rays)
        index[hit] = tri[np.arange(len(tri)), weights.argmax(axis=1)]
        corners = np.zeros(face.shape + (3,), np.int64)
        blend = np.zeros(face.shape + (3,), np.float32)
        corners[hit], blend[hit] = tri, weights
        n = np.cross(vertices[tri[:, 1]] - vertices[tri[:, 0]], vertices[tri[:, 2]] - vertices[tri[:, 0]])
    else:
        index[hit] = owner[face[hit]]
        corners = blend = None
        n = np.asarray(normals)[index[hit]] if normals is not None else -rays
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    shade[hit] = np.abs((n * rays).sum(axis=1))
    return View(index, shade, corners, blend)


def point_spacing(xyz: np.ndarray, sample: int = 20000) -> float:
    """Median distance from a point to its nearest neighbour (over a sample of the points)."""
    from scipy.spatial import cKDTree

    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) < 2:
        return 0.01
    picked = xyz[np.random.default_rng(0).choice(len(xyz), min(sample, len(xyz)), replace=False)]
    distance, _ = cKDTree(xyz).query(picked, k=2)
    gaps = distance[:, 1][distance[:, 1] > 0]
    return float(np.median(gaps)) if len(gaps) else 0.01


def _pixel_rays(camera: Camera) -> np.ndarray:
    """(H, W, 3) unit world directions of the rays through the pixel centres."""
    v, u = np.mgrid[: camera.height, : camera.width] + 0.5
    pixels = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(camera.intrinsic).T
    world = pixels @ camera.world_to_camera[:3, :3]
    return world / np.linalg.norm(world, axis=-1, keepdims=True)


def _barycentric(corners: np.ndarray, eye: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """(P, 3) barycentric weights where each ray from `eye` meets the plane of its triangle
    (P, 3, 3) (Möller-Trumbore), clipped to the triangle."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    p = np.cross(rays, e2)
    det = (e1 * p).sum(axis=1)
    det = np.where(np.abs(det) < 1e-18, 1e-18, det)
    s = eye - corners[:, 0]
    u = (s * p).sum(axis=1) / det
    v = (rays * np.cross(s, e1)).sum(axis=1) / det
    w = np.clip(np.stack([1 - u - v, u, v], axis=1), 0, 1)
    return (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------- figures
def save_figure(path: str | Path, panels: dict[str, np.ndarray], legend: list[tuple[str, np.ndarray]] | None = None,
                colorbar: tuple[str, float, float, str] | None = None, title: str | None = None,
                columns: int | None = None, dpi: int = 100) -> Path:
    """Panels (images of one size) side by side, or in rows of `columns`, each titled; below them
    a legend of (name, u8 colour) swatches or a colour bar (cmap, vmin, vmax, label). A small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    columns = min(columns or len(panels), len(panels))
    rows = -(-len(panels) // columns)
    h, w = next(iter(panels.values())).shape[:2]
    pw, ph, band, gap = w / dpi, h / dpi, 0.28, 0.06  # inches
    per_row = 8 if columns * pw > 9 else 5
    footer = (0.12 + 0.19 * -(-len(legend) // per_row)) if legend else (0.6 if colorbar else 0.0)
    header = 0.35 if title else 0.0
    fig_w = columns * pw + (columns - 1) * gap
    fig_h = header + rows * (band + ph) + (rows - 1) * gap + footer
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    for i, (name, image) in enumerate(panels.items()):
        r, c = divmod(i, columns)
        bottom = footer + (rows - 1 - r) * (band + ph + gap)
        ax = fig.add_axes((c * (pw + gap) / fig_w, bottom / fig_h, pw / fig_w, ph / fig_h))
        ax.imshow(image, interpolation="none")
        ax.set_axis_off()
        ax.set_title(name, fontsize=10, pad=3)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.06 / fig_h, va="top")
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.3", linewidth=0.4, label=n) for n, c in legend]
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(legend), per_row),
                   fontsize=8, frameon=False, handlelength=1.2, handleheight=0.9, columnspacing=1.0, labelspacing=0.25,
                   borderaxespad=0.05, borderpad=0.1)
    if colorbar:
        import matplotlib.cm
        from matplotlib.colors import Normalize

        cmap, vmin, vmax, label = colorbar
        ax = fig.add_axes((0.2, 0.22 / fig_h, 0.6, 0.13 / fig_h))
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(Normalize(vmin, vmax), cmap), cax=ax, orientation="horizontal")
        bar.set_label(label, fontsize=8, labelpad=3)
        bar.ax.tick_params(labelsize=7)
        bar.ax.xaxis.set_label_position("top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _quantise(path, [c for _, c in legend or []])
    return path


def _quantise(path: Path, keep: list[np.ndarray] = (), colours: int = 256) -> None:
    """Rewrite a PNG with a palette of `colours`: the colours `keep` (a legend's swatches stay
    exact) and the image's own most representative ones (a third of the bytes; shaded renders
    lose nothing visible), so pictures kept in the repository stay small."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    kept = np.unique(np.array(list(keep), dtype=np.uint8).reshape(-1, 3), axis=0)
    adaptive = rgb.quantize(colours - len(kept), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    found = np.array(adaptive.getpalette()[: 3 * (colours - len(kept))], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(kept)], palette[len(kept): len(kept) + len(found)] = kept, found
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette.ravel().tolist())
    rgb.quantize(palette=holder, dither=Image.Dither.NONE).save(path, optimize=True)


def segmentation_figure(path: str | Path, xyz: np.ndarray, prediction: np.ndarray, names: tuple[str, ...] | list[str],
                        palette: np.ndarray, faces: np.ndarray | None = None, normals: np.ndarray | None = None,
                        rgb: np.ndarray | None = None, gt: np.ndarray | None = None,
                        others: dict[str, np.ndarray] | None = None, title: str | None = None, width: int = 420) -> Path:
    """Oblique renders of one scan: its colours, the ground truth, `others` (e.g. pseudo-labels),
    the prediction, and where the prediction is right or wrong, in `palette`, with a legend of
    the classes shown (labels index `names`; -1: no class)."""
    view = render_view(xyz, oblique_camera(xyz, width), faces, normals)
    panels, shown = {}, [prediction]
    if rgb is not None:
        panels["input"] = view.image(rgb, smooth=True)
    for name, labels in {**({"ground truth": gt} if gt is not None else {}), **(others or {})}.items():
        panels[name] = view.image(colour_labels(labels, palette))
        shown.append(labels)
    panels["prediction"] = view.image(colour_labels(prediction, palette))
    legend = legend_of(shown, names, palette)
    if gt is not None:
        panels["correct / wrong"] = view.image(correct_wrong(prediction, gt))
        legend += [("correct", CORRECT), ("wrong", WRONG), ("no benchmark class", UNLABELLED)]
    return save_figure(path, panels, legend, title=title, columns=2 if len(panels) == 4 else 3)


def legend_of(labels: list[np.ndarray], names: tuple[str, ...] | list[str], palette: np.ndarray
              ) -> list[tuple[str, np.ndarray]]:
    """(name, colour) of every class that occurs in any of `labels`, in class order."""
    present = np.unique(np.concatenate([np.asarray(a).ravel() for a in labels]))
    return [(names[c], palette[c]) for c in present if 0 <= c < len(names)]
