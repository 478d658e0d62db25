"""Command line: thin. It builds a RunConfig, calls the library and prints; unset options stay None so that
the library's (and the config file's) defaults win."""

from __future__ import annotations

import argparse
import os
import datetime as _dt
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from edgecam import __version__
from edgecam.errors import EdgecamError


class RunProgress:
    """Rich progress bars for a terminal, one per stage (train / export / run / CAMs). A stage's bar is made
    when the stage starts (`RunContext.bar`), so that its elapsed time is the whole stage's, not what is left
    after a long first shard; a stage that does not say how many images it goes through stays hidden until its
    first update (a cached export shows none). The bars are transient (`Progress(transient=True)`): the final
    screen is the summary."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def stage(self, name: str, total: float | None = None) -> Callable[[str, float], None]:
        images = int(total) if total and total > 1 else None  # a count of images (1.0: the old "fraction" total)
        # a stage over images (the CAMs) shows at once, its clock running through a long first shard; one without
        # (an export, training) at its first update: a cached export never shows
        task = self.progress.add_task(name, total=100, visible=images is not None, count=f"0/{images:,} images" if images else "")
        self.tasks[name] = task

        def update(desc: str, frac: float) -> None:
            frac = min(1.0, max(0.0, float(frac)))
            count = f"{round(frac * images):,}/{images:,} images" if images else ""
            self.progress.update(task, description=desc, completed=100.0 * frac, visible=True, count=count)

        return update


def _duration(seconds: float) -> str:
    """"4.2 s", "3.5 min", "1.2 h": a time for a log line."""
    if seconds != seconds or seconds < 0:
        return "?"
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def progress_line(desc: str, frac: float, images: int | None, elapsed: float) -> str:
    """One stage's progress as a plain log line: its name, images done / total when known (else the percent
    done), the time since the stage started and, before the end, the time left at the rate so far."""
    frac = min(1.0, max(0.0, float(frac)))
    if frac >= 1.0:
        return f"{desc}: done" + (f", {images:,} images" if images else "") + f" in {_duration(elapsed)}"
    done = f"{round(frac * images):,}/{images:,} images ({100 * frac:.0f}%)" if images else f"{100 * frac:.0f}%"
    eta = _duration(elapsed * (1.0 - frac) / frac) if frac > 0 else "unknown"
    return f"{desc}: {done}, {_duration(elapsed)} elapsed, ETA {eta}"


class PlainProgress:
    """Progress for a log (stdout not a terminal: a pipe, a file, CI): no bars, one line per update of a stage
    (a shard done, a variant timed), throttled: none in a stage's first `interval` seconds, then at most one
    every `interval` seconds, a gap that grows with the stage's age (a `growth` share of its elapsed time, up to
    `max_interval`: a stage of hours writes a line a minute, not one per shard of a few seconds; a log tailed
    during a long stage still moves every minute); the stage's last update (fraction 1) is always written, once.
    A stage that is never updated (a cached export) writes nothing."""

    def __init__(self, write: Callable[[str], None], interval: float = 10.0, clock: Callable[[], float] | None = None,
                 growth: float = 0.5, max_interval: float = 60.0) -> None:
        import time

        self.write, self.interval, self.clock = write, interval, clock or time.monotonic
        self.growth, self.max_interval = growth, max_interval

    def stage(self, name: str, total: float | None = None) -> Callable[[str, float], None]:
        images = int(total) if total and total > 1 else None
        start = self.clock()
        state = {"last": start, "done": False}

        def update(desc: str, frac: float) -> None:
            now = self.clock()
            finished = frac >= 1.0
            gap = max(self.interval, min(self.max_interval, self.growth * (now - start)))
            if state["done"] or (not finished and now - state["last"] < gap):
                return
            state["last"], state["done"] = now, finished
            self.write(progress_line(desc, frac, images, now - start))

        return update


def require_code_consent(cfg: Any, allowed: bool) -> None:
    """An experiment file naming a 'module:factory' model (or a program for the board: a runtime's
    `program_options`, TensorRT's trtexec) runs that code:
    refused unless the user says the file is trusted (`--allow-code` or EDGECAM_ALLOW_CODE=1), before anything is imported."""
    custom = [m.name for m in cfg.models if ":" in m.name]
    programs = [p for r in cfg.runtimes for p in r.program()]
    if (custom or programs) and not (allowed or os.environ.get("EDGECAM_ALLOW_CODE") == "1"):
        what = ([f"models {', '.join(custom)}: a 'module:factory' model imports and runs Python code named by the experiment file"] if custom else []) + \
               ([f"{', '.join(programs)}: the board runs the program the experiment file names"] if programs else [])
        raise EdgecamError("; ".join(what) + "; run only experiment files you trust, and say so with --allow-code (or EDGECAM_ALLOW_CODE=1)")


def slug(name: str) -> str:
    """`name` as one safe path component (the default run directory): no separators, no `..`, no leading dot."""
    import re

    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "run"


def plain(value: Any, style: str = "") -> Any:
    """A table cell or title rich prints as it is: values come from configs, devices and file names, and rich
    would read `[...]` in them as markup (`[/]` in a device name crashed the CLI)."""
    from rich.text import Text

    return Text(str(value), style=style)


#: colour tags edgecam's own log messages open with ("[yellow]...[/yellow]", "[red]FAILED[/red] ...")
LOG_TAGS = ("yellow", "red")
#: longest line rich's highlighter colours (numbers, paths); past it a line is printed plain
HIGHLIGHT_MAX_LINE = 400


def markup_log(console: Any) -> Callable[[str], None]:
    """The sweep's `log` for a rich console: the message escaped as a whole, then only the colour tag it opens
    with (and the closing that ends the message, else its first) turned back into markup, so a value interpolated into a message (a
    device name, an error, a path) is printed as text and can neither style nor break the output. Control
    characters are shown as escapes and the length capped (`clean_text`: a device's text cannot drive the
    terminal), and a long line is printed without rich's highlighter, whose cost grows with a line's square."""
    from rich.markup import escape

    from edgecam.textsafe import clean_text

    def log(message: str) -> None:
        plain = clean_text(message)
        text = escape(plain)
        for tag in LOG_TAGS:
            opening, closing = f"\\[{tag}]", f"\\[/{tag}]"
            if text.startswith(opening) and closing in text:
                body = text[len(opening):]
                if body.endswith(closing):  # a message wrapped in the tag: its last closing is edgecam's
                    text = f"[{tag}]{body[: -len(closing)]}[/{tag}]"
                else:  # a tagged prefix ("[red]FAILED[/red] ..."): the first closing
                    text = f"[{tag}]" + body.replace(closing, f"[/{tag}]", 1)
                break
        console.print(text, highlight=max(map(len, plain.splitlines() or [""])) <= HIGHLIGHT_MAX_LINE, soft_wrap=not console.is_terminal)  # a log: one line each

    return log


def metric_table(title: str, rows: Any, models: Sequence[str]) -> Any:
    """A Table-1 style rich table of summary rows: comparison x metric, model columns, the row's best in bold."""
    from rich.table import Table

    from edgecam.bench.results import format_mean_std, is_best

    table = Table(title=plain(title))
    table.add_column("Comparison")
    table.add_column("Metric")
    for m in models:
        table.add_column(plain(m), justify="right")
    for _, row in rows.iterrows():
        cells = [plain(format_mean_std(row[f"{m}_mean"], row[f"{m}_std"]), "bold green" if is_best(row, m) else "") for m in models]
        table.add_row(plain(row["comparison"]), plain(row["metric_label"]), *cells)
    return table


def print_table1(console: Any, out: dict[str, Any], models: Sequence[str]) -> None:
    """Table 1 per format / runtime / CAM method (CAM fidelity; faithfulness, localisation, activations), then
    the runtime gap."""
    summary = out["summary"]
    if not summary.empty:
        table1 = summary["metric"].isin(("sim", "cc", "kld"))
        for (fmt, runtime, method, mode), grp in summary[table1].groupby(["format", "runtime", "cam_method", "cam_mode"], sort=False):
            console.print(metric_table(f"CAM fidelity: {method}, {mode} ({fmt} / {runtime}), mean ± std over images", grp, models))
        for (fmt, runtime, method, mode), grp in summary[~table1].groupby(["format", "runtime", "cam_method", "cam_mode"], sort=False):
            console.print(metric_table(f"Faithfulness, localisation, activations: {method}, {mode} ({fmt} / {runtime})", grp, models))
    gap = out.get("runtime_gap")
    if gap is not None and not gap.empty:
        for method, grp in gap.groupby("cam_method", sort=False):
            console.print(metric_table(f"Runtime gap: {method} CAMs of two runtimes at the same precision", grp, models))


def _mean_part(cell: Any) -> str:
    """"0.912" of a "0.912 [0.880, 0.940]" cell (the compact study tables)."""
    return str(cell).split(" [", 1)[0]


def print_studies(console: Any, out: dict[str, Any], compact: bool = False) -> None:
    """The low-bit, saliency-assisted QAT and sensitivity tables of a run that has them (they are what those
    experiments are for); `compact`: the headline columns only, one-line titles (every column: --tables)."""
    from rich.table import Table

    from edgecam.bench.results import format_mean_std

    lowbit = out.get("lowbit")
    if lowbit is not None and not lowbit.empty:
        if compact:
            lt = Table(title="Low-bit PACT (arXiv 2411.05858): accuracy and CAMs vs the fp32 model's (mean ± std); sim: host simulation")
            for col in ("model", "precision", "accuracy", "fp32 accuracy", "CC", "SIM", "ONNX Runtime"):
                lt.add_column(col, justify="left" if col in ("model", "precision", "ONNX Runtime") else "right")
            for _, r in lowbit.iterrows():
                ort = f"accuracy {r['ort_accuracy']:.3f}, agrees {r['ort_top1_agreement']:.3f}" if r["ort_accuracy"] == r["ort_accuracy"] else str(r["ort_status"])
                lt.add_row(plain(r["model"]), plain(f"{r['precision']}{' (sim)' if 'host' in str(r['execution']) else ''}"), f"{r['accuracy']:.4f}", f"{r['accuracy_fp32']:.4f}",
                           format_mean_std(r["cc_mean"], r["cc_std"]), format_mean_std(r["sim_mean"], r["sim_std"]), plain(ort[:40]))
        else:
            lt = Table(title="Low-bit PACT (arXiv 2411.05858): accuracy per bit width and CAMs vs the fp32 model's, mean ± std")
            for col in ("model", "precision", "execution", "accuracy", "fp32 accuracy", "SIM", "CC", "KLD", "ONNX Runtime"):
                lt.add_column(col, justify="right" if col in ("accuracy", "fp32 accuracy", "SIM", "CC", "KLD") else "left")
            for _, r in lowbit.iterrows():
                ort = f"accuracy {r['ort_accuracy']:.4f}, agrees with sim {r['ort_top1_agreement']:.4f}" if r["ort_accuracy"] == r["ort_accuracy"] else str(r["ort_status"])
                lt.add_row(plain(r["model"]), plain(r["precision"]), plain("host simulation" if "host" in r["execution"] else r["execution"]), f"{r['accuracy']:.4f}",
                           f"{r['accuracy_fp32']:.4f}", *(format_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in ("sim", "cc", "kld")), plain(ort[:90]))
        console.print(lt)
    sq = out.get("saliency_qat")
    if sq is not None and not sq.empty:
        if compact:
            keep = [c for c in ("dataset", "training", "precision", "accuracy", "IG gini", "IG deletion_auc", "GC++ cc_vs_fp32", "IG cc_vs_fp32", "ONNX Runtime") if c in sq.columns]
            st = Table(title="Saliency-assisted QAT (arXiv 2411.05858): means (intervals: --tables, saliency_qat.csv); IG = input gradient, GC++ = Grad-CAM++")
            for col in keep:
                st.add_column(plain(col), justify="left" if col in ("dataset", "training", "precision", "ONNX Runtime") else "right")
            for _, r in sq.iterrows():
                st.add_row(*(plain(r[c] if c in ("dataset", "training", "precision", "ONNX Runtime") else _mean_part(r[c])) for c in keep))
        else:
            st = Table(title="Saliency-assisted QAT (arXiv 2411.05858): accuracy and map clarity, mean [95% bootstrap interval]; "
                             "IG = input gradient, GC++ = Grad-CAM++, CC vs the fp32 model of the same training")
            for col in sq.columns:
                st.add_column(plain(col))
            for _, r in sq.iterrows():
                st.add_row(*(plain(v) for v in r))
        console.print(st)
    ranking = out.get("sensitivity_ranking")
    if ranking is not None and not ranking.empty:
        entry = out.get("sensitivity") or {}
        top = 5 if compact else 10
        if compact:
            rt = Table(title=plain(f"Explanation sensitivity ({entry.get('model')} {entry.get('precision')}, host simulation): the {min(top, len(ranking))} of "
                                   f"{len(ranking)} quantized groups whose float fallback moves the CAM most"))
            cols: tuple[str, ...] = ("rank", "group", "kind", "CC gain (fallback)", "95% interval", "top-1 gain")
        else:
            rt = Table(title=plain(f"Explanation sensitivity ({entry.get('model')} {entry.get('precision')}, {entry.get('images')} training-split images, host simulation): "
                                   f"the {min(top, len(ranking))} of {len(ranking)} quantized groups whose float fallback moves the CAM most"))
            cols = ("rank", "group", "kind", "CC gain (fallback)", "95% interval", "CC loss (alone)", "top-1 gain", "SQNR dB")
        for col in cols:
            rt.add_column(col, justify="left" if col in ("group", "kind") else "right")
        for _, r in ranking.sort_values("rank").head(top).iterrows():
            cells = {"rank": str(r["rank"]), "group": plain(r["group"]), "kind": plain(r["kind"]), "CC gain (fallback)": f"{r['delta_cc']:+.4f}",
                     "95% interval": f"[{r['delta_cc_ci_lo']:+.4f}, {r['delta_cc_ci_hi']:+.4f}]", "CC loss (alone)": f"{r['only_delta_cc']:+.4f}",
                     "top-1 gain": f"{r['delta_top1_agreement']:+.3f}", "SQNR dB": f"{r['sqnr_db']:.1f}"}
            rt.add_row(*(cells[c] for c in cols))
        console.print(rt)
        steps = out.get("sensitivity_plan")
        if steps is not None and not steps.empty:
            if compact:
                pt = Table(title=plain(f"Mixed-precision plan: groups tried in float, kept when they raise the CC, until CC vs fp32 >= {entry.get('cc_target')} (host simulation)"))
                pcols: tuple[str, ...] = ("step", "group", "kept", "CC", "top-1 agreement")
            else:
                pt = Table(title=plain(f"Mixed-precision plan: groups tried in float (int16 for weights ONNX Runtime would re-quantize), kept when they raise the CC, until CC vs fp32 >= {entry.get('cc_target')} "
                                       "(host simulation, ranking images; each row: the kept groups plus this one)"))
                pcols = ("step", "group", "kept", "CC", "SIM", "KLD", "top-1 agreement")
            for col in pcols:
                pt.add_column(col, justify="left" if col == "group" else "right")
            for _, r in steps.iterrows():
                cells = {"step": str(r["step"]), "group": plain(r["group"] if isinstance(r["group"], str) and r["group"] else "(none: the whole artifact)"),
                         "kept": "yes" if r["kept"] else "no", "CC": f"{r['cc']:.4f}", "SIM": f"{r['sim']:.4f}", "KLD": f"{r['kld']:.4f}", "top-1 agreement": f"{r['top1_agreement']:.3f}"}
                pt.add_row(*(cells[c] for c in pcols))
            console.print(pt)
        agree = entry.get("host_vs_device")
        if agree:
            console.print(plain(f"mixed variant, device vs host simulation on the ranking images: CAM CC {agree['device_vs_host_cc']:.4f}, top-1 agreement {agree['device_vs_host_top1_agreement']:.3f}"))


def _emulated(bench: Any) -> bool:
    return bool(bench.get("device_emulated", False).any()) if not bench.empty and "device_emulated" in bench else False


EMULATED_NOTE = "[yellow]latency and memory EMULATED: an emulated CPU's times, not the board's; accuracy and CAMs are real[/yellow]"


def performance_table(bench: Any) -> Any:
    """Accuracy, latency and memory per variant (Table 1's companion: `--tables`)."""
    from rich.table import Table

    from edgecam.bench.results import format_rate, nonfinite_count

    emulated = _emulated(bench)
    title = "Accuracy, latency and memory (test split; latency at batch 1)"
    if emulated:
        title += "\n" + EMULATED_NOTE
    table = Table(title=title)
    ms = " (emulated)" if emulated else ""
    nonfinite = any(nonfinite_count(r) for _, r in bench.iterrows())  # a column only when a device answered NaN / Inf
    for col in ("model", "runtime", "precision", "accuracy", "agrees fp32", *(["non-finite"] if nonfinite else []), f"p50 ms{ms}", f"p99 ms{ms}", "init ms", "peak RSS MB", "size KB"):
        table.add_column(col, justify="left" if col in ("model", "runtime", "precision") else "right")
    for _, r in bench.iterrows():
        if not r["ok"]:
            table.add_row(plain(r["model"]), plain(r["runtime"]), plain(r["precision"]), plain("failed", "red"), *[""] * (6 + nonfinite))
            continue
        precision = r["precision"] + (" (dequantized)" if r.get("precision_effective") == "fp32-dequantized" else "")  # a file model's float reference
        table.add_row(
            plain(r["model"]), plain(r["runtime"]), plain(precision), format_rate(r["accuracy"]), format_rate(r["agrees_fp32"]),
            *([plain(str(nonfinite_count(r)), "bold red" if nonfinite_count(r) else "")] if nonfinite else []),
            f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['init_ms']:.1f}", f"{r['peak_rss_mb']:.1f}", f"{r['size_bytes'] / 1024:.1f}",
        )
    return table


def print_summary(console: Any, out: dict[str, Any], models: Sequence[str]) -> None:
    """Every table of the run (`edgecam run --tables`): Table 1 per format / runtime / CAM method, the runtime
    gap, the studies' tables in full, then accuracy, latency and memory."""
    print_table1(console, out, models)
    print_studies(console, out, compact=False)
    console.print(performance_table(out["bench"]))


def _size_mb(size: Any) -> str:
    try:
        mb = float(size) / 2**20
    except (TypeError, ValueError):
        return ""
    return "" if mb != mb else f"{mb:.1f}" if mb >= 10 else f"{mb:.2f}" if mb >= 1 else f"{mb:.3f}"


def _ms(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return ""
    return "n/a" if v != v else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _cc_cell(row: Any, method: str, interval: bool) -> str:
    mean, lo, hi = (float(row.get(f"cc_{method}{k}", float("nan"))) for k in ("", "_lo", "_hi"))
    if mean != mean:
        return "n/a"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if interval and lo == lo and hi == hi else f"{mean:.3f}"


def decision_rich_table(decision: Any, bench: Any, interval: bool = True, part: str = "all") -> Any:
    """The decision table (`bench.decision.decide`) for the terminal: per variant its label, accuracy, agreement
    with fp32, p50 / p99 latency, peak RSS, size, per CAM method the mean CC of its CAMs vs fp32 (with the 95%
    bootstrap interval when `interval`) and the Pareto mark; the emulated-latency warning and the non-finite
    outputs column as in the performance table. `part`: "all", or for a narrow terminal one of its two halves,
    "perf" (up to size) or "cams" (the CC columns and the Pareto mark), each with the variant column."""
    from rich.table import Table

    from edgecam.bench.results import format_rate, nonfinite_count

    t = decision.table
    emulated = _emulated(bench)
    models = list(dict.fromkeys(t["model"])) if "model" in t else []
    one = models[0] if len(models) == 1 else None  # one model: named once in the title, not in every row
    title = f"{one + ': w' if one else 'W'}hich variant to ship: accuracy, latency at batch 1, memory, size and CAM CC vs fp32 (test split)"
    if emulated:
        title += "\n" + EMULATED_NOTE
    ms = " (emulated)" if emulated else ""
    ci = " [95% CI]" if interval else ""
    if part == "cams":
        title = f"{one + ': ' if one else ''}CAM CC vs fp32 per variant"
    table = Table(title=title, caption=plain(f"Pareto ✓: no other variant is as fast (p50), as small and as faithful (CC {decision.reference}) and better on one")
                  if decision.reference and part != "perf" else None)
    nonfinite = any(nonfinite_count(r) for _, r in t.iterrows())
    perf = ["accuracy", "agrees fp32", *(["non-finite"] if nonfinite else []), f"p50 ms{ms}", f"p99 ms{ms}", "peak RSS MB", "size MB"]
    cams = [*(f"CC {m}{ci}" for m in decision.methods), "Pareto"]
    cols = ["variant", *(perf if part != "cams" else []), *(cams if part != "perf" else [])]
    for col in cols:
        table.add_column(plain(col), justify="left" if col == "variant" else "center" if col == "Pareto" else "right", no_wrap=col == "variant")
    effective = list(bench["precision_effective"]) if "precision_effective" in bench else [None] * len(t)
    for (_, r), eff in zip(t.iterrows(), effective + [None] * (len(t) - len(effective))):
        label = str(r["label"])
        label = (label[len(one) + 1 :] if one and label.startswith(one + " ") else label) + (" (dequantized)" if eff == "fp32-dequantized" else "")
        if not r["ok"]:
            table.add_row(plain(label), plain("failed", "red"), *[""] * (len(cols) - 2))
            continue
        n_bad = nonfinite_count(r)
        perf_cells = [format_rate(r["accuracy"]), format_rate(r["agrees_fp32"]), *([plain(str(n_bad), "bold red" if n_bad else "")] if nonfinite else []),
                      _ms(r["p50_ms"]), _ms(r["p99_ms"]), _ms(r["peak_rss_mb"]), _size_mb(r["size_bytes"])]
        cam_cells = [*(_cc_cell(r, m, interval) for m in decision.methods), "✓" if r.get("pareto") else ""]
        table.add_row(plain(label), *(perf_cells if part != "cams" else []), *(cam_cells if part != "perf" else []))
    return table


def run_decision(out: dict[str, Any], cfg: Any) -> Any:
    """`decide` on the run's bench and results with its `explain.reference`, `explain.cc_floor`, bootstrap and seed."""
    from edgecam.bench.decision import DEFAULT_CC_FLOOR, decide

    ex = cfg.explain
    return decide(out["bench"], out["results"], ex.reference, getattr(ex, "cc_floor", DEFAULT_CC_FLOOR),
                  n_boot=int(min(max(ex.bootstrap, 100), 10_000)), seed=int(ex.seed))


def print_decision(console: Any, out: dict[str, Any], cfg: Any) -> None:
    """The default summary: the decision table (the CC intervals when they fit the console's width; in two halves
    when the whole does not fit), then one line per pick."""
    from rich.measure import Measurement

    if out["bench"].empty:
        return
    decision = run_decision(out, cfg)

    def fits(table: Any) -> bool:
        return bool(Measurement.get(console, console.options.update_width(10_000), table).maximum <= console.width)

    # the widest form that fits: whole with intervals, whole with means; in a narrow terminal (80 columns) the
    # performance half and the CAM half one above the other, rather than every number cut to "0.9…"
    built = [decision_rich_table(decision, out["bench"], interval=True)]
    if not fits(built[0]):
        built = [decision_rich_table(decision, out["bench"], interval=False)]
    if not fits(built[0]):
        cams = decision_rich_table(decision, out["bench"], interval=True, part="cams")
        built = [decision_rich_table(decision, out["bench"], part="perf"),
                 cams if fits(cams) else decision_rich_table(decision, out["bench"], interval=False, part="cams")]
    for table in built:
        console.print(table)
    for pick in decision.picks:
        console.print(plain(pick.line()), soft_wrap=not console.is_terminal)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and CI: do not squeeze the tables to 80 columns
    return console


def cmd_run(args: argparse.Namespace) -> int:
    from edgecam.config import apply_overrides, default_config_path, files_config, load_config
    from edgecam.exporters.inspect import FORMATS

    given = list(args.config or [])
    if given and all(Path(f).suffix.lower() in FORMATS for f in given):  # model files: `edgecam run a.tflite a.onnx --data DIR`
        if args.weights or args.models:
            raise EdgecamError("--weights and --models pick among a config's models; model files given on the command line are the model")
        cfg = files_config(given, args.data, args.reference, args.cam_tensor, args.label_offset, args.labels)
        args.config = " ".join(given)  # what the resume hint repeats
        return _run_config(args, cfg)
    if len(given) > 1:
        raise EdgecamError(f"edgecam run takes one experiment file (.toml) or model files ({', '.join(FORMATS)}); got {' '.join(given)}")
    if args.reference or args.cam_tensor or args.label_offset is not None or args.labels:
        raise EdgecamError("--reference, --cam-tensor, --label-offset and --labels go with model files (edgecam run a.tflite a.onnx ...); in a config they are [[models]] keys")
    args.config = given[0] if given else None
    cfg = apply_overrides(load_config(args.config or default_config_path()), args.data, args.weights, args.models)
    return _run_config(args, cfg)


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """`edgecam sensitivity`: the config's run with the explanation-sensitivity analysis on (options override
    its [sensitivity] table; unset ones keep it)."""
    import dataclasses

    from edgecam.config import SensitivitySpec, apply_overrides, load_config
    from edgecam.specs import build_spec

    cfg = apply_overrides(load_config(args.config), args.data, args.weights, None)
    changes = {k: v for k, v in (("model", args.model), ("precision", args.precision), ("cc_target", args.cc_target), ("budget", args.budget), ("images", args.images))
               if v is not None}
    spec = build_spec(SensitivitySpec, {**{f.name: getattr(cfg.sensitivity, f.name) for f in dataclasses.fields(SensitivitySpec)}, **changes, "enabled": True}, "sensitivity")
    return _run_config(args, cfg.replace(sensitivity=spec))


def _run_config(args: argparse.Namespace, cfg: Any) -> int:
    """Run `cfg` with the run options of `args` (out / resume / limit / device), print the tables."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from edgecam.bench import outputs as files
    from edgecam.bench.sweep import run
    from edgecam.devices.inventory import get_device_spec

    console = _console()
    if args.limit is not None:
        if args.limit < 1:
            raise EdgecamError(f"--limit: expected a positive integer, got {args.limit}")
    require_code_consent(cfg, args.allow_code)
    if getattr(args, "address", None) and args.executor != "ray":
        raise EdgecamError(f"--address is a Ray cluster's address: it needs --executor ray (got --executor {args.executor})")
    if getattr(args, "fleet", None) and args.device:
        raise EdgecamError("--fleet and --device both name the devices; pass one")
    dspec = None if getattr(args, "fleet", None) else get_device_spec(args.device or cfg.device, args.devices)
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise EdgecamError(f"--out {args.out} and --resume {args.resume} name different directories; pass one")
    out_dir = Path(args.resume or args.out or Path("runs") / f"{slug(cfg.name)}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    executor = getattr(args, "executor", "inprocess")
    if getattr(args, "fleet", None) or executor != "inprocess":
        return _run_on_executor(args, cfg, out_dir, dspec, console)
    verbose = bool(getattr(args, "verbose", False))
    log = markup_log(console)
    try:
        if console.is_terminal:  # bars, gone when the run ends
            bars = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[count]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=True)
            with bars:
                out = run(cfg, out_dir, limit=args.limit, progress=RunProgress(bars), log=log, device_spec=dspec, resume=True if args.resume else None, verbose=verbose)
        else:  # a log: plain lines, a few per stage
            lines = PlainProgress(lambda line: console.print(plain(line), soft_wrap=True, highlight=False))
            out = run(cfg, out_dir, limit=args.limit, progress=lines, log=log, device_spec=dspec, resume=True if args.resume else None, verbose=verbose)
    except KeyboardInterrupt:
        log(f"[yellow]interrupted: finished jobs are kept in {out_dir}/{files.JOBS}; resume with: edgecam run {args.config or ''} --resume {out_dir}[/yellow]".replace("  ", " "))
        return 130
    if getattr(args, "tables", False):
        print_summary(console, out, [m.name for m in cfg.models])
    else:
        print_studies(console, out, compact=True)
    print_decision(console, out, cfg)
    wrap = not console.is_terminal
    console.print(plain(f"results: {out_dir}/{files.RESULTS}, {files.LATENCY}, {files.BENCH}, {files.SUMMARY}, {files.MANIFEST}  ({out['manifest']['wall_s']:.0f} s)"), soft_wrap=wrap)
    if out.get("report"):
        console.print(plain(f"report: {out['report']}"), soft_wrap=wrap)
    failed = out["failed"]
    if failed:
        table = Table(title=plain(f"{len(failed)} failed job(s) (also in {out_dir}/{files.FAILED}); rerun the same command to retry just these"))
        table.add_column("job")
        table.add_column("error")
        for f in failed:
            table.add_row(plain(f["job"]), plain(f["error"][-600:]))
        console.print(table)
        return 1
    return 0


def _run_on_executor(args: argparse.Namespace, cfg: Any, out_dir: Path, dspec: Any, console: Any) -> int:
    """`edgecam run --fleet A,B` (a fleet directory) or `--executor ray` for one device (its run directory as
    usual, run by one Ray actor): print each device's outcome and where its results are."""
    from rich.table import Table

    from edgecam.bench import outputs as files
    from edgecam.bench.executors import DeviceRun, make_executor
    from edgecam.bench.fleet import device_dir, fleet_run

    log = markup_log(console)
    runner = make_executor(args.executor, args.address)
    resume = True if args.resume else None
    try:
        if args.fleet:
            fleet = fleet_run(cfg, out_dir, args.fleet, args.devices, limit=args.limit, resume=resume, log=log, runner=runner, address=args.address)
            outcomes, where = fleet["outcomes"], {o["device"]: device_dir(out_dir, o["device"]) for o in fleet["outcomes"]}
        else:
            outcomes = [o.__dict__ for o in runner.run(cfg, [DeviceRun(dspec, out_dir)], args.limit, resume, log)]
            where, fleet = {dspec.name: out_dir}, None
    except KeyboardInterrupt:
        log(f"[yellow]interrupted: every device's finished jobs are kept under {out_dir}; rerun the same command to resume[/yellow]")
        return 130
    table = Table(title=plain(f"{len(outcomes)} device run(s) on the {runner.name} executor"))
    for col in ("device", "run", "failed jobs", "wall s", "attempts", "results"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(plain(o["device"]), plain("finished" if o["ok"] else f"FAILED: {(o['error'] or '')[-300:]}"), str(len(o["failed_jobs"])),
                      f"{o['wall_s']:.0f}", str(o["attempts"]), plain(str(where[o["device"]])))
    console.print(table)
    if fleet is not None:
        console.print(plain(f"fleet: {out_dir}/{files.FLEET}, {files.FLEET_GAP_CSV} ({len(fleet['gap'])} device-gap rows), {files.FLEET_REPORT}; "
                            f"wall {fleet['wall_s']:.0f} s vs {fleet['sum_device_wall_s']:.0f} s device after device"))
    return 0 if all(o["ok"] and not o["failed_jobs"] for o in outcomes) else 1


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or take from the cache) every model of a config on its data and save `<model>.pt` state dicts:
    the `--weights DIR` of a later run."""
    import torch

    from edgecam.bench.prepare import prepare_model
    from edgecam.data.spec import load_data
    from edgecam.config import apply_overrides, default_config_path, load_config, weights_file_name

    cfg = apply_overrides(load_config(args.config or default_config_path()), args.data, None, args.models)
    require_code_consent(cfg, args.allow_code)
    data = load_data(cfg.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for m in cfg.models:
        model, _layer, meta = prepare_model(m, cfg, data)
        path = out / weights_file_name(m.name)
        torch.save(model.state_dict(), path)
        print(f"{m.name}: fp32 accuracy {meta['host_fp32_accuracy']:.4f} on the test split -> {path}")
    return 0


def _require_run_dir(path: str) -> None:
    from edgecam.bench.outputs import MANIFEST

    if not (Path(path) / MANIFEST).is_file():
        raise EdgecamError(f"{path}: not an edgecam run directory (no {MANIFEST})")


def cmd_report(args: argparse.Namespace) -> int:
    from edgecam.bench.report import build_report

    _require_run_dir(args.run_dir)
    print(build_report(args.run_dir))
    if args.beside_paper:
        from rich.table import Table

        from edgecam.bench.studies.paper_2403 import beside_paper

        side = beside_paper(args.run_dir)
        if side.empty:
            raise EdgecamError(f"{args.run_dir}: no model of this run has a column in 2403.09939's Table 1 (MobileNetV2, EfficientNet)")
        table = Table(title=plain("Table 1 of arXiv 2403.09939 beside this run (Grad-CAM++, onnx / onnxruntime; the paper's GT is SATSal visual saliency, "
                                  "this run's the configured saliency provider)"))
        for col in side.columns:
            table.add_column(plain(col), justify="left" if col in ("comparison", "metric") else "right")
        for _, r in side.iterrows():
            table.add_row(*[plain(str(v)) for v in r])
        _console().print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgecam.bench.compare import DIFFERENT_DATA_LABEL, GAP_COLUMNS, KEYS, compare_runs, data_difference, device_gap, device_label, to_html
    from edgecam.safe_io import write_bytes

    for run in (args.run_a, args.run_b):
        _require_run_dir(run)
    table = compare_runs(args.run_a, args.run_b, allow_different_data=args.allow_different_data)  # runs on different data: refused unless allowed
    if table.empty:
        raise EdgecamError(f"{args.run_a} and {args.run_b} have no variant in common (same model, format, runtime, precision)")
    console = _console()
    different = data_difference(args.run_a, args.run_b)
    if different:
        console.print(plain(f"{DIFFERENT_DATA_LABEL}\n{different}", "bold red"))
    console.print(plain(f"A: {args.run_a} on {device_label(args.run_a)}; B: {args.run_b} on {device_label(args.run_b)}"))
    out = Table(title=plain(("DIFFERENT DATA, unpaired: " if different else "") + f"{args.run_b} - {args.run_a}: deltas with 95% bootstrap intervals (bold: excludes 0)"))
    for col in (*KEYS, "metric", "A", "B", "delta", "95% CI"):
        out.add_column(col, justify="right" if col in ("A", "B", "delta", "95% CI") else "left")
    for _, r in table.iterrows():
        delta = f"{r['delta']:+.4g}"
        out.add_row(*[plain(r[k]) for k in (*KEYS, "metric")], f"{r['a']:.4g}", f"{r['b']:.4g}",
                    plain(delta, "bold" if r["ci_lo"] > 0 or r["ci_hi"] < 0 else ""), plain(f"[{r['ci_lo']:+.4g}, {r['ci_hi']:+.4g}]"))
    console.print(out)
    gap = device_gap(args.run_a, args.run_b, allow_different_data=args.allow_different_data)
    if different:
        console.print(plain("no device gap: the runs were made on different data", "bold red"))
    elif gap.empty:
        console.print("no device gap: the runs kept no outputs of common images (explain.keep_outputs)")
    else:
        gt = Table(title="Device gap: the same artifact on A and B, image by image (kept outputs)")
        for col in GAP_COLUMNS:
            gt.add_column(col.replace("_", " "), justify="right" if col in GAP_COLUMNS[7:] else "left")
        for _, r in gap.iterrows():
            gt.add_row(*[plain(r[c]) for c in GAP_COLUMNS[:8]], *[f"{r[c]:.4g}" for c in GAP_COLUMNS[8:]])
        console.print(gt)
    if args.gap_csv:
        write_bytes(args.gap_csv, gap.to_csv(index=False).encode())  # atomic; a refused write is a RunDirWriteError naming the file
        print(f"device gap: {args.gap_csv}")
    if args.html:
        write_bytes(args.html, to_html(table, args.run_a, args.run_b, gap).encode("utf-8"))
        print(f"html: {args.html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecam", description="Latency, memory and CAM fidelity of quantized vision models on the hardware that runs them.")
    p.add_argument("--version", action="version", version=f"edgecam {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_sensitivity(sub)
    t = sub.add_parser("train", help="train the config's models on its data (cached) and save <model>.pt state dicts for --weights")
    t.add_argument("config", nargs="?", default=None, help="experiment TOML file (default: configs/quickstart.toml)")
    t.add_argument("--out", required=True, metavar="DIR", help="folder for the state dicts")
    t.add_argument("--data", default=None, metavar="DIR", help="as for `run`")
    t.add_argument("--models", default=None, metavar="A,B", help="train only these of the config's models")
    t.add_argument("--allow-code", action="store_true", help="allow 'module:factory' models (the experiment file runs Python code)")
    t.add_argument("-v", "--verbose", action="store_true", help="let the libraries' own log lines and warnings through")
    t.set_defaults(func=cmd_train)
    rp = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained: tables, CAM grid, trade-off plots)")
    rp.add_argument("run_dir")
    rp.add_argument("--beside-paper", action="store_true", help="also print the run's Table 1 beside arXiv 2403.09939's values (MobileNetV2, EfficientNet columns)")
    rp.set_defaults(func=cmd_report)
    cp = sub.add_parser("compare", help="the same variants in two runs: deltas B - A with 95%% bootstrap intervals")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--html", default=None, metavar="FILE", help="also write the comparison as an HTML page")
    cp.add_argument("--gap-csv", default=None, metavar="FILE", help="also write the device gap (same artifact on the two devices, image by image) as CSV")
    cp.add_argument("--allow-different-data", action="store_true", help="compare runs made on different data (their data fingerprints differ; refused "
                    "without this): means only, nothing paired by image, no device gap, every output labelled DIFFERENT DATA")
    cp.set_defaults(func=cmd_compare)
    d = sub.add_parser("devices", help="the device inventory: list it, or probe a device")
    d.add_argument("--devices", default=None, metavar="FILE", help="device inventory file")
    dsub = d.add_subparsers(dest="devices_command", required=True)
    dsub.add_parser("list", help="list the inventory's devices").set_defaults(func=cmd_devices_list)
    pr = dsub.add_parser("probe", help="connect to a device and print its facts (arch, CPU, RAM, OS, Python, runtimes, Jetson release)")
    pr.add_argument("name")
    pr.add_argument("--json", action="store_true", help="print the facts as JSON")
    pr.set_defaults(func=cmd_devices_probe)
    ins = sub.add_parser("inspect", help="what a deployed .onnx / .tflite file is: its input contract, class count, real precision and sha256")
    ins.add_argument("files", nargs="+", metavar="FILE")
    ins.add_argument("--json", action="store_true", help="print the facts as JSON")
    ins.set_defaults(func=cmd_inspect)
    return p


def _add_run(sub: Any) -> None:
    """`edgecam run`: an experiment on one device, a fleet, or a Ray cluster."""
    r = sub.add_parser("run", help="run an experiment (default: configs/quickstart.toml)")
    r.add_argument("config", nargs="*", default=None, metavar="CONFIG | MODEL_FILE",
                   help="experiment TOML file (default: configs/quickstart.toml), or model files (.onnx / .tflite) of one model to benchmark and explain as they are")
    r.add_argument("--reference", default=None, metavar="FILE", help="with model files: an fp32 ONNX of the same weights (the mirror CAMs' head)")
    r.add_argument("--cam-tensor", default=None, metavar="NAME", help="with model files: the CAM tensor's name (default: the input of the global pool before the scores)")
    r.add_argument("--label-offset", type=int, default=None, metavar="N", help="with model files: leading non-class outputs (1: a background class first)")
    r.add_argument("--labels", default=None, metavar="FILE", help="with model files: the class names, one a line, in class-index order (checked against the data)")
    r.add_argument("--out", default=None, help="run directory (default: runs/<name>-<timestamp>)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="finish an interrupted run: reuse its finished jobs (a rerun with the same --out does this too)")
    r.add_argument("--data", default=None, metavar="DIR", help="an image folder (class folders, or images + labels CSV) instead of the config's data; or 'digits-clutter'")
    r.add_argument("--weights", default=None, metavar="DIR", help="a folder of <model>.pt state dicts, one per model of the config")
    r.add_argument("--models", default=None, metavar="A,B", help="run only these of the config's models")
    r.add_argument("--limit", type=int, default=None, help="test images per variant (overrides data.limit)")
    r.add_argument("--device", default=None, help="device name from the inventory (overrides the config's `device`)")
    r.add_argument("--devices", default=None, metavar="FILE", help="device inventory (default: $EDGECAM_DEVICES, ./devices.toml, ~/.config/edgecam/devices.toml)")
    r.add_argument("--allow-code", action="store_true", help="allow 'module:factory' models: the experiment file then runs Python code (trusted files only)")
    r.add_argument("--fleet", default=None, metavar="A,B,...", help="run on each of these inventory devices ('all': every one) into OUT/<device>/, "
                   "with the device gap of every pair (fleet.html)")
    r.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"), help="inprocess: one device after another (default); ray: every "
                   "device at once, one Ray actor per board (pip install 'edgecam[ray]')")
    r.add_argument("--address", default=None, metavar="ADDR", help="the Ray cluster to join (default: start one on this machine for the run)")
    _add_output_flags(r)
    r.set_defaults(func=cmd_run)


def _add_output_flags(p: Any) -> None:
    """What a run prints: --tables (every table, as Table 1 of arXiv 2403.09939 lays it out) and --verbose."""
    p.add_argument("--tables", action="store_true", help="also print every table: CAM fidelity per CAM method x format, faithfulness, the runtime gap, "
                   "the studies' tables in full, accuracy / latency / memory (default: the decision table and its picks)")
    p.add_argument("-v", "--verbose", action="store_true", help="let the libraries' own log lines and warnings through (absl, TensorFlow, torch ...) "
                   "and print the explain stage's work estimate per variant")


def _add_sensitivity(sub: Any) -> None:
    """`edgecam sensitivity`: rank, plan and run a mixed-precision variant (takes `run`'s data, device and resume flags)."""
    se = sub.add_parser("sensitivity", help="rank the quantized layer groups of an ONNX artifact by how far they move the CAM, plan a mixed-precision variant and run it")
    se.add_argument("config", help="experiment TOML file (its ONNX fp32 and int8 / int16 artifacts are analysed)")
    se.add_argument("--model", default=None, help="the model analysed (default: the config's first)")
    se.add_argument("--precision", default=None, choices=("int8", "int16"), help="the QDQ artifact analysed (default: int8)")
    se.add_argument("--cc-target", type=float, default=None, help="the plan stops once the CAM CC vs fp32 reaches this (default 0.99)")
    se.add_argument("--budget", type=int, default=None, help="most groups the plan returns to float (default 8)")
    se.add_argument("--images", type=int, default=None, help="training-split images the ranking uses (default 100)")
    for a, kw in (("--out", {"help": "run directory (default: runs/<name>-<timestamp>)"}), ("--resume", {"metavar": "RUN_DIR", "help": "finish an interrupted run"}),
                  ("--data", {"metavar": "DIR", "help": "as for `run`"}), ("--weights", {"metavar": "DIR", "help": "as for `run`"}),
                  ("--device", {"help": "device name from the inventory"}), ("--devices", {"metavar": "FILE", "help": "device inventory"})):
        se.add_argument(a, default=None, **kw)
    se.add_argument("--limit", type=int, default=None, help="test images per variant")
    se.add_argument("--allow-code", action="store_true", help="allow 'module:factory' models (the experiment file runs Python code)")
    _add_output_flags(se)
    se.set_defaults(func=cmd_sensitivity)


def cmd_devices_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgecam.devices.inventory import inventory_path, load_inventory

    devices = load_inventory(args.devices)
    table = Table(title=plain(f"devices ({inventory_path(args.devices) or 'no inventory file: built-in local only'})"))
    for col in ("name", "url", "runtimes", "threads", "cores", "notes"):
        table.add_column(col)
    for spec in devices.values():
        table.add_row(*(plain(x) for x in (spec.name, spec.url, ", ".join(spec.runtimes) or "all", spec.threads or "-", spec.cores or "-", spec.notes)))
    _console().print(table)
    return 0


def cmd_devices_probe(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from edgecam.devices.inventory import get_device_spec, open_device

    spec = get_device_spec(args.name, args.devices)
    with open_device(spec) as device:
        facts = device.info()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    table = Table(title=plain(f"{spec.name} ({spec.url})"), show_header=False)
    for key, value in facts.items():
        if key == "ram_bytes" and isinstance(value, int):
            value = f"{value / 2**30:.1f} GiB"
        elif key == "runtimes" and isinstance(value, dict):
            value = ", ".join(f"{k} {v}" if v else f"{k}: not found" for k, v in value.items())
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(plain(key), plain(value))
    _console().print(table)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from rich.table import Table

    from edgecam.exporters.inspect import inspect_model_file

    files = [inspect_model_file(f) for f in args.files]  # every file read (and a bad one refused) before any output
    if args.json:
        print(json.dumps([{**dataclasses.asdict(f), "path": str(f.path)} for f in files], indent=2))
        return 0
    table = Table(title="model files")
    for col in ("file", "format", "input", "classes", "precision", "weights", "sha256"):
        table.add_column(col)
    for f in files:
        quant = f" scale {f.input.scale:.6g} zero point {f.input.zero_point}" if f.input.scale is not None else ""
        contract = f"{f.input.name} {f.input.layout} {'x'.join(map(str, f.input.shape))} {f.input.dtype}{quant}"
        table.add_row(*(plain(x) for x in (f.path.name, f.format, contract, f.n_classes, f.precision, f.granularity or "float", f.sha256[:16])))
    _console().print(table)
    return 0


#: exit statuses (README "Usage"): 0 done, 1 a job failed (recorded), 2 bad input (a config, an argument, a damaged
#: or foreign run directory), 3 a file could not be written (disk full, quota, read-only, permissions, a link in the
#: run directory: finished jobs are kept, rerun the same command once it is fixed), 130 interrupted
EXIT_BAD_INPUT, EXIT_CANNOT_WRITE = 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    """The `edgecam` command: run a subcommand and turn edgecam's errors into a message and an exit status
    (`EXIT_*`), never a traceback. An OSError of a disk that takes no more writes (full, over quota, read-only)
    raised outside edgecam's own writers (the cache, an exporter) is reported the same way as a run directory
    that cannot be written."""
    from edgecam.safe_io import DISK_ERRNOS, write_error
    from edgecam.errors import RunDirWriteError

    from edgecam.quiet import third_party_quiet

    args = build_parser().parse_args(argv)
    try:
        with third_party_quiet(verbose=bool(getattr(args, "verbose", False))):  # the libraries' own log lines: --verbose
            return int(args.func(args))
    except RunDirWriteError as exc:
        print(f"edgecam: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    except EdgecamError as exc:
        print(f"edgecam: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        print(f"edgecam: error: {write_error(exc.filename or 'a file (its name was not reported)', exc)}", file=sys.stderr)
        return EXIT_CANNOT_WRITE


if __name__ == "__main__":
    sys.exit(main())
