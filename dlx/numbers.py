"""Reading numbers out of JSON and YAML that dlx did not necessarily write (summaries, metrics, configs)."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
