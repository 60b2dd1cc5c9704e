"""File formats of the dataset readers: per-frame files (PLY meshes: shared/ply.py)."""
