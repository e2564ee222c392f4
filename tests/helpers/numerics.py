"""Array comparisons used by the parity and transform tests."""

from __future__ import annotations

import numpy as np


def relative_error(ours, ref) -> float:
    """||ours - ref|| / ||ref|| in float64 (Frobenius norm over all elements)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
