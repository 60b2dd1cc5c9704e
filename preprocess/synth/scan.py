"""A generated room as a scanner gives it: depth with a consumer sensor's noise, the frames
fused into one surface (TSDF and marching cubes), cleaned and decimated to ScanNet's vertex
density, and the ground truth carried onto it from the room's own surfaces.

Real ScanNet meshes are reconstructions: objects that touch the floor or a wall share its
surface, what no frame saw is missing, and the noise is the fusion's. A room written as its
separate generated parts would hand every mesh-based partition the object boundaries for free.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import open3d.core as o3c
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from preprocess.datasets.scannet import DEPTH_SHIFT
from shared.render import MeshRaycaster
from preprocess.synth.render import intrinsic_for, render_frames
from preprocess.synth.rooms import SynthMesh

# scene0000_00_vh_clean_2.ply: 81,369 vertices and 153,587 faces over 152.33 m^2 of surface
SCANNET_VERTICES_PER_M2 = 534.2
SCANNET_FACES_PER_VERTEX = 153_587 / 81_369
SCAN_POSES = 200  # frames of a room's scan: enough overlap that most surfaces are measured twice
SENSOR_RANGE = (0.3, 5.0)  # metres a consumer depth camera returns (Structure Sensor, Kinect v1)
TRUNCATION_VOXELS = 4.0  # the TSDF's truncation band, in voxels
MIN_WEIGHT = 2.0  # a surface must be measured in two frames to be kept, as fusion keeps no single-frame speckle
MIN_PIECE_M2 = 0.05  # pieces smaller than this are fusion debris and are cleaned away


def sensor_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A consumer depth camera's reading of true depth `depth` (metres, 0 = no surface), as
    uint16 millimetres (0 = no reading): axial noise of standard deviation
    0.0012 + 0.0019 (z - 0.4)^2 m (Nguyen, Izadi and Lovell 2012, Kinect), nothing outside
    `SENSOR_RANGE`."""
    z = np.asarray(depth, np.float64)
    noisy = z + rng.standard_normal(z.shape) * (0.0012 + 0.0019 * (z - 0.4) ** 2)
    seen = (z >= SENSOR_RANGE[0]) & (z <= SENSOR_RANGE[1])
    return np.where(seen, np.clip(np.rint(noisy * DEPTH_SHIFT), 1, 65535), 0).astype(np.uint16)


def fuse(colours: np.ndarray, depths: np.ndarray, camera_to_world: np.ndarray, intrinsic: np.ndarray,
         voxel: float) -> o3d.geometry.TriangleMesh:
    """TSDF fusion of the frames (colour (F,H,W,3) uint8, depth (F,H,W) uint16 millimetres)
    into `voxel`-metre voxels, and the marching-cubes surface of what at least two frames saw."""
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=(1, 1, 3), voxel_size=float(voxel), block_resolution=8, block_count=20_000)
    k = o3c.Tensor(np.asarray(intrinsic, np.float64))
    for colour, depth, pose in zip(colours, depths, camera_to_world):
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth)))
        colour_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(colour)))
        extrinsic = o3c.Tensor(np.linalg.inv(pose))
        # the blocks (8 voxels wide) the readings touch, from every other pixel's: open3d's own
        # sampling of the depth image can miss all of a small frame's readings and abort
        points = o3d.t.geometry.PointCloud.create_from_depth_image(depth_image, k, extrinsic, DEPTH_SHIFT,
                                                                   SENSOR_RANGE[1], stride=2)
        if points.is_empty():  # no reading (a wall nearer than the sensor's range, in a tiny test frame)
            continue
        blocks = grid.compute_unique_block_coordinates(points, trunc_voxel_multiplier=TRUNCATION_VOXELS)
        grid.integrate(blocks, depth_image, colour_image, k, extrinsic, DEPTH_SHIFT, SENSOR_RANGE[1],
                       trunc_voxel_multiplier=TRUNCATION_VOXELS)
    return _canonical(grid.extract_triangle_mesh(weight_threshold=MIN_WEIGHT).to_legacy())


def _canonical(mesh: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    """The mesh with vertices sorted by position and triangles by their vertices (each
    starting at its smallest, orientation kept): the fusion's block order depends on its
    threads, and a room must be the same bytes whatever the machine."""
    xyz, colour, faces = (np.asarray(a) for a in (mesh.vertices, mesh.vertex_colors, mesh.triangles))
    order = np.lexsort(xyz.T[::-1])
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    faces = rank[faces]
    first = faces.argmin(axis=1)[:, None]
    faces = np.take_along_axis(faces, (first + np.arange(3)) % 3, axis=1)
    faces = faces[np.lexsort(faces.T[::-1])]
    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(xyz[order]), o3d.utility.Vector3iVector(faces))
    out.vertex_colors = o3d.utility.Vector3dVector(colour[order])
    return out


def clean_and_decimate(mesh: o3d.geometry.TriangleMesh, vertices: int | None = None) -> o3d.geometry.TriangleMesh:
    """Quadric-decimate to ScanNet's vertex density (or to about `vertices` vertices; ScanNet's
    vh_clean_2 meshes are quadric-decimated reconstructions; a mesh already coarser is kept as
    it is), dropping pieces smaller than `MIN_PIECE_M2` before (fusion debris) and after (slivers
    the decimation cut off)."""
    mesh = _without_small_pieces(mesh)
    vertices = SCANNET_VERTICES_PER_M2 * mesh.get_surface_area() if vertices is None else vertices
    target = int(round(vertices * SCANNET_FACES_PER_VERTEX))
    if len(mesh.triangles) > target:
        mesh = _without_small_pieces(mesh.simplify_quadric_decimation(target))
    mesh.remove_degenerate_triangles()
    mesh.remove_unreferenced_vertices()
    return mesh


def _without_small_pieces(mesh: o3d.geometry.TriangleMesh) -> o3d.geometry.TriangleMesh:
    """The mesh without its connected pieces of less than `MIN_PIECE_M2` (scipy's components:
    open3d's cluster_connected_triangles takes seconds on a room)."""
    xyz, faces = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(len(xyz),) * 2)
    piece = connected_components(graph, directed=False)[1][faces[:, 0]]
    corners = xyz[faces]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    mesh.remove_triangles_by_mask(np.bincount(piece, area)[piece] < MIN_PIECE_M2)
    mesh.remove_unreferenced_vertices()
    return mesh


def carry_labels(source: SynthMesh, raycaster: MeshRaycaster, points: np.ndarray) -> np.ndarray:
    """(N,) the instance (index into the room's objects) of the source surface nearest to each
    point: where a reconstructed vertex lies on a generated surface, it takes that surface's."""
    nearest = raycaster.scene.compute_closest_points(o3c.Tensor(np.ascontiguousarray(points, np.float32)))
    face = nearest["primitive_ids"].numpy().astype(np.int64)
    return source.instance[source.faces[face, 0]]


def reconstruct(source: SynthMesh, raycaster: MeshRaycaster, camera_to_world: np.ndarray, width: int, height: int,
                voxel: float, rng: np.random.Generator, vertices: int | None = None) -> SynthMesh:
    """The written mesh of a room: its scan (`width` x `height` RGB-D frames from every pose of
    `camera_to_world`, rendered from the `source` surfaces, depth read by `sensor_depth`)
    fused at `voxel` metres (`fuse`), cleaned and decimated to ScanNet's density or about
    `vertices` vertices (`clean_and_decimate`), coloured
    by the fusion, and labelled from the nearest source surface (`carry_labels`)."""
    k = intrinsic_for(width, height)
    colours, depths = render_frames(source, camera_to_world, k, width, height, raycaster)
    mesh = clean_and_decimate(fuse(colours, sensor_depth(depths, rng), camera_to_world, k, voxel), vertices)
    xyz = np.asarray(mesh.vertices, np.float32)
    instance = carry_labels(source, raycaster, xyz)
    nyu40 = np.zeros(int(source.instance.max()) + 1, np.uint16)
    nyu40[source.instance] = source.nyu40
    rgb = np.clip(np.rint(np.asarray(mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    return SynthMesh(xyz, rgb, np.asarray(mesh.triangles, np.int32), nyu40[instance], instance.astype(np.int32))
