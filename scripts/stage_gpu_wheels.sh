#!/usr/bin/env bash
# The wheels `make gpu-check` needs on a bare GPU machine, downloaded here into a git-ignored
# folder that the device tool carries there (README, "Checking a GPU machine").
#
# Those machines have Python 3.12 with torch, numpy, numba, scipy, tqdm, scikit-image, pyyaml,
# packaging and typing-extensions, no network, and no zarr or plyfile: gpu-check writes and reads its toy
# store through zarr, which needs numcodecs, donfig and google-crc32c, and scoring imports the scan
# readers, which read PLY files with plyfile (pure Python). Versions are the ones this
# repository's tests run with. Usage: scripts/stage_gpu_wheels.sh [folder]  (default build/gpu-wheels)
set -euo pipefail
out="${1:-build/gpu-wheels}"
pip="${PIP:-python3 -m pip}"
wheels=(zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 plyfile==1.1.5)
mkdir -p "$out"
$pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$out" "${wheels[@]}"
ls -l "$out"
du -sh "$out"
