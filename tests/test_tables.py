"""Markdown tables of the summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kappaflow.tables import cell, markdown_table


def test_cells():
    assert cell(0.123456) == "0.1235"
    assert cell(np.nan) == "n/a" and cell(None) == "n/a"
    assert cell(3) == "3" and cell(True) == "True" and cell("x") == "x"


def test_markdown_table():
    df = pd.DataFrame({"model": ["a"], "mean_SRME": [0.5], "n": [2]})
    assert markdown_table(df, ["model", "mean_SRME"], ["model", "SRME"]) == [
        "| model | SRME |",
        "|---|---|",
        "| a | 0.5000 |",
    ]
