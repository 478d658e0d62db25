"""The work a run's explain stage will cost, printed before it starts: device forwards per method and
variant, bytes pushed to the device, and seconds from the timing pass (p50 latency per image at the bench
batch size, a lower bound: the explain stage batches larger). A Score-CAM on a 1,280-channel model is 1,280
forwards per image and variant; the user should see that before the run goes quiet for hours."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgecam.bench.variant import Variant
    from edgecam.config import ExplainSpec


def method_work(method: str, ex: "ExplainSpec", n_img: int, input_shape: tuple[int, ...], feature_shape: tuple[int, ...]) -> tuple[int, int]:
    """(device forwards, bytes pushed) of one CAM method on one variant for `n_img` images, as the method
    declares it (`CamMethod.device_work`)."""
    from edgecam.explain.cams import CAM_METHODS

    return CAM_METHODS.get(method).device_work(n_img, input_shape, feature_shape, dict(ex.method_options))


def work_estimate(variants: list["Variant"], ex: "ExplainSpec", n_img: int, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per variant x stage ("outputs", each method needing device forwards, "faithfulness")."""
    rows = []
    n_faith = min(n_img, ex.faithfulness_images) if ex.faithfulness else 0
    image_bytes = int(np.prod(input_shape)) * 4
    for v in variants:
        if not v.ok:
            continue
        feature_shape = tuple(int(d) for d in v.manifest.get("output_shapes", {}).get("features", ["batch"])[1:])
        samples = v.result.get("samples_s") or []
        per_image_s = float(np.median(samples)) / max(1, int(v.result.get("batch_size") or 1)) if samples else float("nan")
        stages = [("outputs", n_img, n_img * image_bytes)]
        stages += [(m, *method_work(m, ex, n_img, input_shape, feature_shape)) for m in ex.methods]
        stages.append(("faithfulness", 2 * n_faith * (ex.faithfulness_steps + 1), 2 * n_faith * 2 * image_bytes))
        for stage_name, forwards, pushed in stages:
            if forwards:
                rows.append({"variant": v.key, "stage": stage_name, "device_forwards": int(forwards), "bytes_pushed": int(pushed),
                             "seconds_at_p50": forwards * per_image_s})
    return rows


def format_estimate(rows: list[dict[str, Any]]) -> str:
    """A few lines for the log: totals per variant and the largest stage."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    lines = []
    for key, rs in by_variant.items():
        total_f = sum(r["device_forwards"] for r in rs)
        total_b = sum(r["bytes_pushed"] for r in rs)
        secs = sum(r["seconds_at_p50"] for r in rs)
        worst = max(rs, key=lambda r: r["device_forwards"])
        eta = "unknown" if secs != secs else f"~{secs:.0f} s" if secs < 120 else f"~{secs / 60:.1f} min"
        lines.append(f"  {key}: {total_f:,} device forwards ({worst['stage']} {worst['device_forwards']:,}), {total_b / 2**20:,.1f} MiB to push, {eta} of device time at p50")
    return ("work estimate for the explain stage (device work only; the host's share, CAMs and metrics, is measured on the first shard "
            "and the whole stage's time logged then):\n" + "\n".join(lines))
