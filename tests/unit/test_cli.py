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


# --- what a run prints: progress in a log and in a terminal, stage words, the decision table, quiet libraries ---


def test_progress_lines_name_the_stage_images_elapsed_and_eta() -> None:
    from edgecam.cli import progress_line

    assert progress_line("CAMs tinycnn", 0.25, 200, 12.0) == "CAMs tinycnn: 50/200 images (25%), 12.0 s elapsed, ETA 36.0 s"
    assert progress_line("CAMs tinycnn", 1.0, 200, 150.0) == "CAMs tinycnn: done, 200 images in 2.5 min"
    assert progress_line("train tinycnn", 0.5, None, 30.0) == "train tinycnn: 50%, 30.0 s elapsed, ETA 30.0 s"
    assert progress_line("run v", 1.0, None, 0.42) == "run v: done in 0.4 s"
    assert progress_line("run v", 0.0, None, 3.0).endswith("ETA unknown")


def test_plain_progress_is_throttled_and_always_writes_the_last_update_once() -> None:
    from edgecam.cli import PlainProgress

    now = [0.0]
    lines: list[str] = []
    progress = PlainProgress(lines.append, interval=10.0, clock=lambda: now[0])
    update = progress.stage("CAMs m", 1000)
    for t, frac in ((1, 0.001), (5, 0.002), (11, 0.01), (15, 0.02), (22, 0.03), (30, 0.04), (42, 0.05), (43, 1.0), (44, 1.0)):
        now[0] = float(t)
        update("CAMs m", frac)
    # nothing in the first 10 s; then at most one line per max(10 s, half the stage's age); the end once
    assert lines[:2] == ["CAMs m: 10/1,000 images (1%), 11.0 s elapsed, ETA 18.1 min", "CAMs m: 30/1,000 images (3%), 22.0 s elapsed, ETA 11.9 min"]  # 22 s: 11 s after
    assert lines[2:] == ["CAMs m: done, 1,000 images in 43.0 s"]  # 30 s and 42 s: within half the stage's age of the last line
    quick = progress.stage("run v", None)  # a stage done within its first seconds: one line, its end
    now[0] = 45.0
    quick("run v", 0.0)
    now[0] = 46.5
    quick("run v", 1.0)
    assert lines[-1] == "run v: done in 2.5 s" and len(lines) == 4  # from the stage's start (44 s), not its first update
    progress.stage("export m int8", None)  # never updated (a cached export): no line
    assert len(lines) == 4


def test_plain_progress_writes_a_line_a_minute_for_a_stage_of_hours() -> None:
    from edgecam.cli import PlainProgress

    now = [0.0]
    lines: list[tuple[float, str]] = []
    update = PlainProgress(lambda line: lines.append((now[0], line)), clock=lambda: now[0]).stage("CAMs m", 100_000)
    for shard in range(1, 1001):  # 1,000 shards, one every 7 s: about two hours
        now[0] = 7.0 * shard
        update("CAMs m", shard / 1000)
    gaps = [b[0] - a[0] for a, b in zip(lines, lines[1:])]
    assert 100 <= len(lines) <= 140 and max(gaps) <= 60 + 7  # not one per shard, and never more than a shard past a minute
    assert lines[-1][1].startswith("CAMs m: done, 100,000 images in 1.9 h")


def test_a_bar_is_made_when_its_stage_starts_so_its_elapsed_time_is_the_whole_stage() -> None:
    import io

    from rich.progress import Progress

    from edgecam.cli import RunProgress

    now = [100.0]
    bars = Progress(console=Console(file=io.StringIO()), get_time=lambda: now[0])
    progress = RunProgress(bars)
    update = progress.stage("CAMs m", 200)
    (task,) = bars.tasks
    assert task.visible and task.start_time == 100.0 and task.fields["count"] == "0/200 images"  # made and shown now
    now[0] = 160.0  # a long first shard
    update("CAMs m", 0.5)
    assert task.elapsed == 60.0 and task.percentage == 50.0 and task.fields["count"] == "100/200 images"
    export = progress.stage("export m int8", None)
    task = bars.tasks[1]
    assert not task.visible and task.start_time == 160.0  # a stage without an image count: shown at its first update (a cached export: never)
    now[0] = 170.0
    export("QAT m-int8", 1.0)  # the stage's callback names what it does now: the same bar
    assert len(bars.tasks) == 2 and task.visible and task.description == "QAT m-int8" and task.finished and task.elapsed == 10.0


def test_the_prepare_step_says_train_only_when_it_trains() -> None:
    from edgecam.bench.sweep import prepare_label
    from edgecam.config import ModelSpec

    assert prepare_label(ModelSpec("tinycnn"), trained_now=True) == "train tinycnn"
    assert prepare_label(ModelSpec("tinycnn"), trained_now=False) == "fp32 accuracy tinycnn (cached checkpoint)"
    assert prepare_label(ModelSpec("efficientnet_lite0", pretrained=True), trained_now=False) == "fp32 accuracy efficientnet_lite0 (pretrained)"
    assert prepare_label(ModelSpec("tinycnn", weights="w.pt"), trained_now=False) == "fp32 accuracy tinycnn (weights file)"


def test_the_work_estimate_is_one_line_by_default() -> None:
    from edgecam.bench.sweep import estimate_line

    rows = [{"variant": f"m-onnx-{p}-ort", "stage": s, "device_forwards": 24, "bytes_pushed": 2**20, "seconds_at_p50": 0.5}
            for p in ("fp32", "int8") for s in ("outputs", "faithfulness")]
    line = estimate_line("m", rows)
    assert "\n" not in line and line == "m: explain stage work 96 device forwards over 2 variant(s), 4.0 MiB to push, ~2 s of device time at p50 (per variant: --verbose)"


def _decision_out(n_bad: int = 0, emulated: bool = False, failed: bool = False) -> dict:
    bench = pd.DataFrame([{"model": "m", "format": f, "runtime": rt, "precision": p, "ok": not (failed and p == "int8" and rt == "litert"),
                           "accuracy": 0.9, "agrees_fp32": 1.0 if p == "fp32" else 0.95, "p50_ms": 5.0 if p == "fp32" else 2.0, "p99_ms": 7.0,
                           "peak_rss_mb": 80.0, "size_bytes": (18 if p == "fp32" else 5) * 2**20, "device_emulated": emulated,
                           "nonfinite_outputs": n_bad if p == "int8" else 0}
                          for f, rt in (("onnx", "onnxruntime"), ("tflite", "litert")) for p in ("fp32", "int8")])
    results = pd.DataFrame([{"model": "m", "format": f, "runtime": rt, "precision": p, "cam_method": meth, "cam_mode": "mirror", "image_id": str(i),
                             "cc_fp32": 1.0 if p == "fp32" else 0.95 + 0.01 * (i % 3), "sim_fp32": 0.9}
                            for f, rt in (("onnx", "onnxruntime"), ("tflite", "litert")) for p in ("fp32", "int8") for meth in ("gradcampp", "eigencam") for i in range(6)])
    return {"bench": bench, "results": results}


def _render(out: dict, width: int) -> str:
    from edgecam.cli import print_decision
    from edgecam.config import RunConfig

    console = Console(record=True, width=width, color_system=None)
    print_decision(console, out, RunConfig())
    return console.export_text()


def test_the_decision_table_and_its_picks() -> None:
    text = _render(_decision_out(), 150)
    assert "m: which variant to ship" in text and "CC gradcampp [95% CI]" in text and "CC eigencam [95% CI]" in text
    assert "│ onnxruntime int8 " in text  # one model: named in the title, not in every row
    assert "fastest with CC vs fp32 (gradcampp) >= 0.9: m onnxruntime int8" in text and "most faithful quantized (gradcampp):" in text
    assert "non-finite" not in text and "EMULATED" not in text and "✓" in text
    narrow = _render(_decision_out(), 100)  # the whole does not fit: two halves, the intervals kept in the CAM half
    rows = "".join(line for line in narrow.splitlines() if line.startswith(("│", "┃")))
    assert "…" not in rows and "m: CAM CC vs fp32 per variant" in narrow and "0.960 [0.95" in rows
    assert "0.960 [0.95" in text  # the mean CC of the int8 variants (0.95, 0.96, 0.97 per image) with its interval


def test_an_80_column_terminal_gets_the_decision_table_in_two_halves_with_every_number_whole() -> None:
    """At 80 columns the whole table squeezed every number to "0.9…": the performance half and the CAM half
    are printed one above the other instead, each fitting, the CC intervals kept when they fit."""
    text = _render(_decision_out(), 80)
    assert "…" not in "".join(line for line in text.splitlines() if line.startswith("│"))
    assert "m: CAM CC vs fp32 per variant" in text and "0.960 [0.95" in text and "0.9000" in text and "5.00" in text
    assert max(len(line) for line in text.splitlines() if line.startswith(("│", "┃", "┏", "└"))) <= 80


def test_the_decision_table_keeps_the_emulated_warning_and_the_nonfinite_column() -> None:
    text = _render(_decision_out(n_bad=3, emulated=True, failed=True), 160)
    assert "EMULATED" in text and "p50 ms (emulated)" in text and "non-finite" in text
    int8 = next(line for line in text.splitlines() if "│ onnxruntime int8" in line)
    assert "│          3 │" in int8 or " 3 │" in int8
    assert "failed" in next(line for line in text.splitlines() if "│ litert int8" in line)


QUIET_SCRIPT = """
import logging, sys, warnings
from edgecam.quiet import third_party_quiet

with third_party_quiet(verbose=sys.argv[1] == "verbose"):
    logging.getLogger("torch.utils._pytree").warning("library logger line")
    logging.getLogger("torchao.quantization").warning("library child logger line")
    logging.getLogger("edgecam.bench.store").warning("edgecam logger line")
    warnings.warn_explicit("library warning", UserWarning, "lib.py", 1, module="somelib.mod")
    warnings.warn_explicit("edgecam warning", UserWarning, "x.py", 1, module="edgecam.bench.x")
print(logging.getLogger("torch.utils._pytree").level)
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_quiet_drops_the_libraries_logs_and_warnings_but_never_edgecams(mode: str) -> None:
    """As a process sees it (pytest captures logging and warnings itself): the libraries' logger records and
    warnings are gone unless --verbose; edgecam's own logger warnings and warnings show either way."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "edgecam logger line" in proc.stderr and "edgecam warning" in proc.stderr
    library = ("library logger line", "library child logger line", "library warning")
    assert all((line in proc.stderr) == (mode == "verbose") for line in library), proc.stderr
    assert proc.stdout.strip() == "0"  # the levels put back


def test_a_noisy_native_import_is_silenced_and_a_failing_one_keeps_its_story(tmp_path, capfd, monkeypatch) -> None:
    import sys

    from edgecam.quiet import QuietImports

    for name, body in (("edgecam_noisy_ok", "import os\nos.write(2, b'I0000 port.cc:153] oneDNN custom operations are on\\n')\nVALUE = 1\n"),
                       ("edgecam_noisy_bad", "import os\nos.write(2, b'absl:: the reason it failed\\n')\nraise ImportError('broken')\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body)
        (tmp_path / name / "sub.py").write_text("import os\nos.write(2, b'W1206 sub noise\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = QuietImports(noisy=("edgecam_noisy_ok", "edgecam_noisy_bad"))
    sys.meta_path.insert(0, hook)
    try:
        import edgecam_noisy_ok  # noqa: F401
        import edgecam_noisy_ok.sub  # noqa: F401

        assert edgecam_noisy_ok.VALUE == 1 and type(edgecam_noisy_ok.__loader__).__name__ == "SourceFileLoader"  # its own loader once imported
        assert capfd.readouterr().err == ""
        with pytest.raises(ImportError, match="broken"):
            import edgecam_noisy_bad  # noqa: F401
        assert "absl:: the reason it failed" in capfd.readouterr().err  # a failure keeps what it printed
    finally:
        sys.meta_path.remove(hook)
        for name in ("edgecam_noisy_ok", "edgecam_noisy_ok.sub", "edgecam_noisy_bad"):
            sys.modules.pop(name, None)
