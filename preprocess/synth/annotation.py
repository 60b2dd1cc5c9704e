"""A written room's instance annotation in ScanNet's two files: the over-segmentation its
annotators grouped (`_vh_clean_2.0.010000.segs.json`: Felzenszwalb on the mesh at k = 0.01 and
20 vertices, as ScanNet's Segmentator made it) and the groups (`.aggregation.json`), one per
object. ScanNet's annotators could only pick whole segments; the generated truth is exact per
vertex, so a segment that spans two objects is split where they meet."""

from __future__ import annotations

import json

import numpy as np

from preprocess.partition.felzenszwalb import felzenszwalb
from preprocess.segment_cli import segs_json
from preprocess.synth.rooms import SynthMesh

K_THRESH, MIN_VERTS = 0.01, 20  # ScanNet's annotation segments


def annotation_files(scene_id: str, mesh: SynthMesh, names: list[str]) -> tuple[str, str]:
    """(segs.json text, aggregation.json text) of `mesh`, whose `instance` indexes `names`
    (the room's objects); an object's objectId is that index."""
    segment = felzenszwalb(mesh.xyz, mesh.faces, k=K_THRESH, min_verts=MIN_VERTS)
    unit = np.unique(segment.astype(np.int64) * len(names) + mesh.instance, return_inverse=True)[1].ravel()
    _, first = np.unique(unit, return_index=True)  # segs_json names a unit by its smallest vertex id
    segs = segs_json(f"{scene_id}_vh_clean_2", K_THRESH, MIN_VERTS, unit)
    owner = mesh.instance[first]
    groups = [{"id": int(i), "objectId": int(i), "segments": first[owner == i].tolist(), "label": names[i]}
              for i in np.unique(owner)]
    aggregation = {"sceneId": f"scannet.{scene_id}", "appId": "hicl3d.synth", "segGroups": groups,
                   "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json"}
    return segs, json.dumps(aggregation, separators=(",", ":"))
