"""CLI pieces only render: the Table-1 table bolds the model the summary names as best; values print as text
(no rich markup read from names, errors or device facts); code-running configs need consent; safe run dirs."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

import pytest

from edgecam.cli import main, markup_log, metric_table, plain, slug


def test_metric_table_bolds_the_summarys_best_models() -> None:
    rows = pd.DataFrame([
        {"comparison": "int8 v. fp32", "metric": "cc", "metric_label": "CC (higher is better)", "a_mean": 0.9, "a_std": 0.1, "b_mean": 0.9, "b_std": 0.2, "best": "a,b"},
        {"comparison": "int8 v. fp32", "metric": "kld", "metric_label": "KLD (lower is better)", "a_mean": 0.1, "a_std": 0.0, "b_mean": 0.3, "b_std": 0.1, "best": "a"},
        {"comparison": "int8", "metric": "act_std", "metric_label": "Activation std", "a_mean": float("nan"), "a_std": float("nan"), "b_mean": 1.0, "b_std": float("nan"), "best": ""},
    ])
    table = metric_table("t", rows, ["a", "b"])
    cells = [[(str(c), str(c.style)) for c in col._cells] for col in table.columns]
    assert cells[2] == [("0.900 ± 0.100", "bold green"), ("0.100 ± 0.000", "bold green"), ("n/a", "")]
    assert cells[3] == [("0.900 ± 0.200", "bold green"), ("0.300 ± 0.100", ""), ("1.000", "")]
    console = Console(record=True, width=120)
    console.print(table)
    assert "KLD (lower is better)" in console.export_text()


@pytest.mark.parametrize("hostile", ["[/]", "[/yellow]", "[bold red]x", "[link=javascript:alert(1)]y[/link]", "\\[/]"])
def test_values_in_log_lines_and_tables_print_as_text(hostile: str) -> None:
    console = Console(record=True, width=200)
    log = markup_log(console)
    log(f"[yellow]device {hostile} is emulated[/yellow]")
    log(f"[red]FAILED[/red] {hostile}: {hostile}")
    log(f"device {hostile} ({hostile}): probing")
    console.print(plain(f"title {hostile}"))
    text = console.export_text()
    assert text.count(hostile) == 6, text  # every value printed as it is: nothing parsed, nothing swallowed
    assert "FAILED" in text and "is emulated" in text


def test_an_experiment_file_that_runs_code_needs_consent(tmp_path, capsys, monkeypatch) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[[models]]\nname = "os:system"\ntarget_layer = "x"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "os:system" in err and "--allow-code" in err and not (tmp_path / "out").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "../../x:y"\n')
    assert main(["run", str(bad), "--allow-code"]) == 2
    assert "not 'module.path:factory'" in capsys.readouterr().err


def test_run_directory_names_are_one_safe_component() -> None:
    assert slug("quickstart") == "quickstart" and slug("../../etc") == "etc" and slug("a/b c") == "a_b_c" and slug("..") == "run"


def test_a_mistyped_resume_directory_is_refused_and_not_created(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-run"
    assert main(["run", "configs/digits-demo.toml", "--resume", str(missing)]) == 2
    assert "not an edgecam run directory" in capsys.readouterr().err and not missing.exists()
