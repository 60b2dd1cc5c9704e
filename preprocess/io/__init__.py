"""File formats shared by the dataset readers and the generated dataset (PLY meshes)."""
