"""The embedded default dataset: procedural indoor rooms written in the ScanNet v2 layout.

Each room (4-8 m, walls and floor, doors, windows, pictures, curtains, and furniture of the
20 ScanNet benchmark classes plus a few unlabelled-in-the-benchmark props) is built from boxes,
cylinders and folded sheets meshed as ~4 cm grids. Colours come from one palette shared by every
class, with per-object stripes, checks or blotches, so colour alone does not tell the class. The
room is then scanned as a real one is: RGB-D frames along a hand-held path with a depth sensor's
noise, fused into one surface and decimated to ScanNet's vertex density, its labels and
instances carried from the generated surfaces; the written mesh is that reconstruction.
Everything is drawn from `numpy.random.default_rng([seed, scene index])`: the same seed gives
byte-identical files, and scene i does not depend on how many scenes are generated.

One module a job: `shapes` (mesh primitives), `furniture` (the catalogue), `rooms` (layout,
scanning path and coloured mesh), `render` (RGB-D frames), `scan` (sensor noise, fusion,
decimation, labels), `annotation` (ScanNet's instance files), `writer` (ScanNet scan folders and
splits), `cli` (`python -m preprocess synth`).
"""

from preprocess.synth.furniture import NYU40
from preprocess.synth.render import intrinsic_for, render_frames
from preprocess.synth.rooms import SynthMesh, SynthRoom, build_mesh, make_room
from preprocess.synth.writer import generate, generate_scene, write_scene

__all__ = [
    "NYU40", "SynthMesh", "SynthRoom", "build_mesh", "generate", "generate_scene", "intrinsic_for", "make_room",
    "render_frames", "write_scene",
]
