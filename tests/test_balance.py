"""Class balance for the rare classes (issue 22): inverse-sqrt class weights."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import UserError
from train.engine.balance import class_weights


def test_inverse_sqrt_class_weights():
    # 1/sqrt(frequency) ∝ [1/10, 1/5, -, 1/2], scaled to mean 1 over the three present classes
    assert class_weights(np.array([100, 25, 0, 4])).tolist() == pytest.approx([0.375, 0.75, 0.0, 1.875])
    with pytest.raises(UserError, match="no labelled point"):
        class_weights(np.zeros(3))

