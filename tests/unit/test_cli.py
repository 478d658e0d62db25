"""CLI pieces only render: the Table-1 table bolds the model the summary names as best."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from edgecam.cli import metric_table


def test_metric_table_bolds_the_summarys_best_models() -> None:
    rows = pd.DataFrame([
        {"comparison": "int8 v. fp32", "metric": "cc", "metric_label": "CC (higher is better)", "a_mean": 0.9, "a_std": 0.1, "b_mean": 0.9, "b_std": 0.2, "best": "a,b"},
        {"comparison": "int8 v. fp32", "metric": "kld", "metric_label": "KLD (lower is better)", "a_mean": 0.1, "a_std": 0.0, "b_mean": 0.3, "b_std": 0.1, "best": "a"},
        {"comparison": "int8", "metric": "act_std", "metric_label": "Activation std", "a_mean": float("nan"), "a_std": float("nan"), "b_mean": 1.0, "b_std": float("nan"), "best": ""},
    ])
    table = metric_table("t", rows, ["a", "b"])
    cells = [[str(c) for c in col._cells] for col in table.columns]
    assert cells[2] == ["[bold green]0.900 ± 0.100[/]", "[bold green]0.100 ± 0.000[/]", "n/a"]
    assert cells[3] == ["[bold green]0.900 ± 0.200[/]", "0.300 ± 0.100", "1.000"]
    console = Console(record=True, width=120)
    console.print(table)
    assert "KLD (lower is better)" in console.export_text()
