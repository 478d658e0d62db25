"""CLI pieces only render: the Table-1 table bolds the model the summary names as best; values print as text
(no rich markup read from names, errors or device facts); code-running configs need consent; safe run dirs."""

from __future__ import annotations

from pathlib import Path

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
    trt = tmp_path / "trt.toml"
    trt.write_text('[[runtimes]]\nname = "tensorrt"\ntrtexec = "/tmp/anything"\n')
    assert main(["run", str(trt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "runtimes.trtexec /tmp/anything: the board runs the program" in err and "--allow-code" in err and not (tmp_path / "out").exists()


def test_run_directory_names_are_one_safe_component() -> None:
    assert slug("quickstart") == "quickstart" and slug("../../etc") == "etc" and slug("a/b c") == "a_b_c" and slug("..") == "run"


def test_a_mistyped_resume_directory_is_refused_and_not_created(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-run"
    assert main(["run", "configs/digits-demo.toml", "--resume", str(missing)]) == 2
    assert "not an edgecam run directory" in capsys.readouterr().err and not missing.exists()


def test_devices_commands_print_hostile_values_as_text(tmp_path, capsys, monkeypatch) -> None:
    """Inventory notes and a device's probe facts reach the terminal as text: rich markup in them neither
    crashes the CLI ([/] raised MarkupError) nor styles anything."""
    from edgecam.devices.local import LocalDevice

    inv = tmp_path / "devices.toml"
    inv.write_text('[[devices]]\nname = "lab"\nurl = "local"\nnotes = "[/] shelf [bold red]3[/bold red]"\n')
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["devices", "--devices", str(inv), "list"]) == 0
    assert "[/] shelf [bold red]3[/bold red]" in capsys.readouterr().out
    monkeypatch.setattr(LocalDevice, "info", lambda self: {"name": "lab", "kind": "local", "cpu_model": "[/]", "os": "[link=http://x]y[/link]"})
    assert main(["devices", "--devices", str(inv), "probe", "lab"]) == 0
    out = capsys.readouterr().out
    assert "[/]" in out and "[link=http://x]y[/link]" in out


def test_train_also_needs_consent_for_code(tmp_path, capsys) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[[models]]\nname = "os:system"\ntarget_layer = "x"\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "os:system" in err and "--allow-code" in err and not (tmp_path / "w").exists()


def test_the_default_run_directory_stays_under_runs(tmp_path, monkeypatch) -> None:
    """A config `name` with `..` or `/` picks the default run directory: it becomes one component under runs/."""
    import edgecam.bench.sweep as sweep

    cfg = tmp_path / "x.toml"
    cfg.write_text(Path("configs/digits-demo.toml").read_text().replace('name = "', 'name = "../../evil/', 1))
    seen = []

    def fake_run(cfg, out_dir, **kwargs):  # records where the run would go, then stops as an interrupt does
        seen.append(out_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run", fake_run)
    cfg.write_text(cfg.read_text().replace('path = "', f'path = "{Path.cwd()}/', 0))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg)]) == 130
    (out,) = seen
    assert out.parent == Path("runs") and out.name.startswith("evil_") and ".." not in out.parts


def test_the_environment_variable_gives_the_same_consent(tmp_path, capsys, monkeypatch) -> None:
    """EDGECAM_ALLOW_CODE=1 is --allow-code for scripts: the refusal is gone and the next check (the factory
    itself) answers."""
    cfg = tmp_path / "x.toml"
    cfg.write_text('[[models]]\nname = "edgecam_no_such_module:factory"\ntarget_layer = "x"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "--allow-code" in capsys.readouterr().err
    monkeypatch.setenv("EDGECAM_ALLOW_CODE", "1")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--allow-code" not in err and "edgecam_no_such_module" in err


@pytest.mark.parametrize(("extra", "message"), [
    (["--fleet", "local,local", "--out", "{tmp}/f"], "--fleet: device(s) named twice: local"),
    (["--fleet", "local,x", "--device", "local"], "--fleet and --device both name the devices; pass one"),
    (["--address", "127.0.0.1:6379", "--out", "{tmp}/f"], "--address is a Ray cluster's address: it needs --executor ray"),
])
def test_fleet_and_executor_options_are_checked_before_any_work(tmp_path, capsys, extra, message) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(["run", "configs/digits-demo.toml", *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "f").exists()
