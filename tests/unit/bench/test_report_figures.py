"""The report's figures, drawn: every text artist a plain string (mathtext is off, so a TeX tick label such as
`$\\mathdefault{10^{1}}$` would print as its source), tick labels of log axes plain numbers, every scatter
point numbered with no two numbers overlapping, legends outside the axes listing only what the run has."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgecam.bench.report import (latency_figure, memory_figure, place_labels, plain_number, scatter_figure, sensitivity_figure)


def _points(crowded: bool = True) -> pd.DataFrame:
    """Two models x ORT / LiteRT x fp32 / int8 on one device; `crowded`: the two fp32 variants of a model share
    a CC of 1 and nearly the same latency and size (the quickstart's ORT fp32 and LiteRT fp32)."""
    rows = []
    for i, model in enumerate(("efficientnet_lite0", "mobilenet_v2")):
        for runtime, fmt in (("onnxruntime", "onnx"), ("litert", "tflite")):
            for precision in ("fp32", "int8"):
                fp32 = precision == "fp32"
                p50 = (5.0 if fp32 else 9.0) * (1 + i) * (1.03 if runtime == "litert" and crowded else 1.4 if runtime == "litert" else 1)
                rows.append({"device": "local", "model": model, "format": fmt, "runtime": runtime, "precision": precision,
                             "cc_fp32": 1.0 if fp32 else 0.993 + 0.001 * i, "p50_ms": p50, "size_bytes": (18e6 if fp32 else 5e6) / (1 + i),
                             "cam_method": "gradcampp"})
    return pd.DataFrame(rows).assign(number=lambda d: np.arange(1, len(d) + 1))


def _texts(fig: Any) -> list[str]:
    """Every string the drawn figure shows: tick labels (major and minor) of every axis, titles, labels,
    legend entries, annotations, the suptitle."""
    from matplotlib.text import Text

    fig.canvas.draw()
    out = [t.get_text() for t in fig.findobj(Text)]
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            out += [t.get_text() for t in axis.get_ticklabels(which="both")]
            out.append(axis.get_offset_text().get_text())
    return [t for t in out if t]


def _figures() -> dict[str, Any]:
    latency = pd.concat([pd.DataFrame({"model": "m", "format": f, "runtime": r, "precision": p, "latency_ms": np.random.default_rng(0).gamma(4, s, 50)})
                         for (f, r), s in ((("onnx", "onnxruntime"), 2.0), (("tflite", "litert"), 60.0)) for p in ("fp32", "int8")])
    bench = pd.DataFrame([{"model": "m", "format": "onnx", "runtime": "onnxruntime", "precision": p, "peak_rss_mb": 90.0 + k} for k, p in enumerate(("fp32", "int8"))])
    ranking = pd.DataFrame({"group": [f"conv{i}" for i in range(5)], "kind": "weight", "delta_cc": [0.02, 0.01, -0.003, 0.004, 0.0],
                            "delta_cc_ci_lo": [0.01, 0.0, -0.01, 0.0, -0.001], "delta_cc_ci_hi": [0.03, 0.02, 0.0, 0.01, 0.001],
                            "only_delta_cc": [-0.01, -0.02, -0.001, 0.0, -0.003]})
    return {"scatter": scatter_figure(_points(), "Latency and size vs CAM fidelity on local"), "latency": latency_figure(latency, {}),
            "memory": memory_figure(bench, {}), "sensitivity": sensitivity_figure(ranking)}


@pytest.mark.parametrize("name", ["scatter", "latency", "memory", "sensitivity"])
def test_every_text_of_every_figure_is_plain(name: str) -> None:
    import matplotlib.pyplot as plt

    fig = _figures()[name]
    texts = _texts(fig)
    assert texts, name
    bad = [t for t in texts if "$" in t or "mathdefault" in t]
    assert not bad, (name, bad)
    plt.close("all")


def test_the_check_catches_what_matplotlib_does_by_default() -> None:
    """Without the plain formatters a log axis under `text.parse_math = False` shows TeX source: the check above
    would see it (the bug of issue 37)."""
    from edgecam.bench.outputs import pyplot

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([3, 300], [0, 1])
    ax.set_xscale("log")
    assert any("mathdefault" in t for t in _texts(fig))
    plt.close(fig)


def test_log_axis_ticks_are_numbers_even_on_a_narrow_range() -> None:
    """The size axis of the quickstart spans 5 to 18 MB (under a decade): its labelled ticks are numbers, and
    more than one (matplotlib labels none or minor ones in TeX)."""
    import matplotlib.pyplot as plt

    fig = scatter_figure(_points(), "t")
    fig.canvas.draw()
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.xaxis.get_ticklabels(which="both") if t.get_text()]
        values = [float(t.replace(",", "")) for t in labels]  # ValueError if one is not a plain number
        lo, hi = ax.get_xlim()
        assert len([v for v in values if lo <= v <= hi]) >= 2, labels
    assert [plain_number(x) for x in (0.5, 5, 20, 2.5, 1500, 0)] == ["0.5", "5", "20", "2.5", "1,500", "0"]
    plt.close(fig)


def _text_box(label: Any) -> Any:
    """The box of a label's text alone (an Annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    return Text.get_window_extent(label, label.figure.canvas.get_renderer())


def _boxes(ax: Any) -> list[Any]:
    from matplotlib.text import Annotation

    return [_text_box(a) for a in ax.texts if isinstance(a, Annotation)]


@pytest.mark.parametrize("crowded", [True, False])
def test_every_point_is_numbered_and_no_two_numbers_overlap(crowded: bool) -> None:
    import matplotlib.pyplot as plt

    points = _points(crowded)
    fig = scatter_figure(points, "t")
    fig.canvas.draw()
    for ax in fig.axes:
        assert sorted(int(a.get_text()) for a in ax.texts) == list(points["number"])
        boxes = _boxes(ax)
        frame = ax.get_window_extent()
        for i, a in enumerate(boxes):
            assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
            assert not any(a.overlaps(b) for b in boxes[i + 1:]), i
    plt.close(fig)


def test_legend_is_outside_the_axes_and_lists_only_what_the_run_has() -> None:
    """No int16 / mixed entry for a run without them (the quickstart's legend listed both); the legend sits
    below the axes, over no point."""
    import matplotlib.pyplot as plt

    fig = scatter_figure(_points(), "t")
    fig.canvas.draw()
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries == ["efficientnet_lite0", "mobilenet_v2", "fp32", "int8", "Pareto front of the plot (per model)"]
    box = legend.get_window_extent()
    assert all(box.y1 < ax.get_window_extent().y0 for ax in fig.axes)
    plt.close(fig)


def test_place_labels_moves_a_label_off_a_neighbour() -> None:
    """Ten points on one spot: ten labels, none over another (the greedy rings reach out with leader lines)."""
    from edgecam.bench.outputs import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.scatter([1.0] * 10, [1.0] * 10)
    ax.set_xlim(0, 2), ax.set_ylim(0, 2)
    labels = place_labels(ax, [(1.0, 1.0)] * 10, [str(i) for i in range(10)])
    fig.canvas.draw()
    boxes = [_text_box(a) for a in labels]
    assert len(boxes) == 10 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


@pytest.mark.parametrize("lo,hi", [(0.25, 2.3), (5.0, 18.0), (5.0, 270.0), (5.0, 5.2), (0.01, 5000.0)])
def test_log_tick_labels_are_numbers_and_never_run_into_each_other(lo: float, hi: float) -> None:
    """Whatever the range (a quickstart's 5 to 18 MB, latencies under a millisecond, a range of 4% or of 6
    decades): at least two labelled ticks in view, each a plain number, no two overlapping ("0.80.9")."""
    from edgecam.bench.outputs import pyplot
    from edgecam.bench.report import plain_log_axis

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=100)
    ax.scatter(np.geomspace(lo, hi, 6), np.arange(6))
    ax.set_xscale("log")
    plain_log_axis(ax.xaxis, lo, hi)
    ax.margins(x=0.15)
    fig.canvas.draw()
    x0, x1 = ax.get_xlim()
    shown = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_text() and x0 <= t.get_position()[0] <= x1]
    assert len(shown) >= 2, [t.get_text() for t in shown]
    for t in shown:
        float(t.get_text().replace(",", ""))
    boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in shown]
    plt.close(fig)
