"""`python -m preprocess compile`: its warm-up reaches every Numba kernel of the package."""

from __future__ import annotations

from preprocess.warmup import warm_up


def test_warm_up_compiles_every_kernel() -> None:
    # A kernel added without a call in preprocess/warmup.py would be compiled inside a user's run.
    assert warm_up() == []
