"""Unit-test fixtures: a few small fitted models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def models() -> list[Any]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    return [LogisticRegression(C=c).fit(X, y) for c in (1.0, 0.5, 0.1)]
