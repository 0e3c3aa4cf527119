"""Markdown tables of the summaries (results/metrics.md, before-after.md): pure text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def cell(value: Any) -> str:
    """A table cell: 4 decimals for floats, ``n/a`` for missing or non-finite numbers."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(
    df: pd.DataFrame, columns: Sequence[str], headers: Sequence[str] = ()
) -> list[str]:
    """Lines of a Markdown table of ``columns`` of ``df`` (``headers`` renames them)."""
    names = list(headers) or list(columns)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(cell(row[c]) for c in columns) + " |")
    return lines
