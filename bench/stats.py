"""Small statistics and formatting helpers shared by the scenarios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): an observed value, honest for small samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def secs(value: float | None) -> str:
    """Seconds for a table: `12.3 s`, `182 s`."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.1f} s" if abs(value) < 100 else f"{value:.0f} s"


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value * 1000:.1f} ms"


def mb(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0f} MB"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}x" if baseline else "-"
