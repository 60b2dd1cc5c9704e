"""`make gpu-check` runs on a bare GPU machine: it imports nothing those machines lack beyond
the wheels scripts/stage_gpu_wheels.sh stages (the check itself runs there, not in CI)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Packages of this project the GPU machines do not have (README: "Checking a GPU machine").
ABSENT = ["open3d", "plyfile", "dask", "distributed", "pgeof", "open_clip", "zarr", "numcodecs", "donfig", "google_crc32c"]
IMPORT_UNDER_BLOCK = """
import importlib.abc, json, runpy, sys
absent = set(sys.argv[1].split(","))
staged = set(sys.argv[2].split(","))
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in absent and top not in staged:
            raise ImportError(f"{top} is not on the GPU machines")
sys.meta_path.insert(0, Absent())
runpy.run_path("benchmarks/gpu_check.py", run_name="gpu_check")
print(json.dumps(sorted({m.partition(".")[0] for m in sys.modules} & absent)))
"""


def staged_wheels() -> set[str]:
    """Import names of the wheels the staging script downloads."""
    script = (ROOT / "scripts" / "stage_gpu_wheels.sh").read_text()
    names = re.search(r"wheels=\(([^)]*)\)", script).group(1).split()
    return {name.partition("==")[0].replace("-", "_") for name in names}


def test_gpu_check_imports_only_what_the_gpu_machines_have_or_the_staged_wheels():
    staged = staged_wheels()
    assert staged == {"zarr", "numcodecs", "donfig", "google_crc32c", "plyfile"}
    result = subprocess.run([sys.executable, "-c", IMPORT_UNDER_BLOCK, ",".join(ABSENT), ",".join(staged)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(json.loads(result.stdout.splitlines()[-1])) == {"zarr", "numcodecs", "donfig", "google_crc32c", "plyfile"}


def test_the_block_catches_a_missing_package():
    result = subprocess.run([sys.executable, "-c", IMPORT_UNDER_BLOCK, ",".join(ABSENT), "numcodecs,donfig,google_crc32c"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "zarr is not on the GPU machines" in result.stderr
