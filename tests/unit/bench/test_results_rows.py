"""`image_rows` and `gap_rows` prepare each map once: their rows equal those built from the per-pair metric
functions (the first implementation, kept here), on CAMs with constant, all-zero and NaN maps, with and without
ground truth, for a quantized and an fp32 variant. A row whose outputs (or whose reference's) were not finite has
no prediction and NaN metrics, and `variant_table` leaves such images out of accuracy and counts them (issue 36)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgecam.bench.results import COLUMNS, FROM_OUTPUTS, FROM_REFERENCE, CamMaps, ShardMaps, gap_rows, image_rows, variant_table
from edgecam.bench.variant import NONFINITE, NOT_PREDICTED, Variant, finite_top1
from edgecam.explain.localisation import energy_pointing_game
from edgecam.explain.metrics import cc, compare, emd, nss


def _reference_rows(v: Any, method: str, mode: str, cams: np.ndarray, cams_fp32: np.ndarray, reference: np.ndarray, shard: Any,
                    saliency: np.ndarray, provider: str, pred: np.ndarray, pred_fp32: np.ndarray, device: str, wsol_iou: np.ndarray,
                    extra: list[dict[str, Any]], emd_size: int) -> list[dict[str, Any]]:
    """`image_rows` as first written: `compare` three times, then `emd`, `nss`, the pointing game and `cc`."""
    rows = []
    nan = float("nan")
    for i in range(len(cams)):
        vs_fp32 = compare(cams[i], cams_fp32[i])
        vs_sal = compare(cams[i], saliency[i])
        has_gt = bool(shard.has_box[i])
        gt_mask = shard.masks[i] > 0.5
        vs_gt = compare(cams[i], shard.masks[i]) if has_gt else {"sim": nan, "cc": nan, "kld": nan}
        row = {
            "model": v.model, "format": v.format, "runtime": v.runtime, "precision": v.precision, "precision_effective": v.precision_effective,
            "device": device, "cam_method": method, "cam_mode": mode, "image_id": shard.ids[i], "label": int(shard.labels[i]), "pred": int(pred[i]),
            "top1_correct": bool(pred[i] == shard.labels[i]), "agrees_fp32": bool(pred[i] == pred_fp32[i]),
            "sim_fp32": vs_fp32["sim"], "cc_fp32": vs_fp32["cc"], "kld_fp32": vs_fp32["kld"], "rmse_fp32": vs_fp32["rmse"],
            "emd_fp32": 0.0 if v.precision == "fp32" else (emd(cams[i], cams_fp32[i], emd_size) if emd_size else nan),
            "has_gt": has_gt, "sim_gt": vs_gt["sim"], "cc_gt": vs_gt["cc"], "kld_gt": vs_gt["kld"], "nss_gt": nss(cams[i], gt_mask) if has_gt else nan,
            "sim_sal": vs_sal["sim"], "cc_sal": vs_sal["cc"], "kld_sal": vs_sal["kld"], "saliency_provider": provider,
            "wsol_iou": float(wsol_iou[i]), "pointing_energy": energy_pointing_game(cams[i], gt_mask) if has_gt else nan,
            **extra[i],
            "cc_host_ref": cc(cams[i], reference[i]),
            "cam_constant": bool(vs_fp32["pred_constant"]), "cc_fp32_nan": bool(np.isnan(vs_fp32["cc"])), "cc_gt_nan": bool(np.isnan(vs_gt["cc"])),
            "artifact_sha256": v.manifest.get("sha256"),
        }
        if not extra[i]["output_finite"] or pred[i] == NONFINITE:  # issue 36: nothing computed from non-finite outputs
            row.update({"pred": None, "top1_correct": None, "agrees_fp32": None, **{k: nan for k in FROM_OUTPUTS}})
        if pred_fp32[i] < 0:
            row["agrees_fp32"] = None
        if pred_fp32[i] == NONFINITE:
            row.update({k: nan for k in FROM_REFERENCE})
        row["cc_fp32_nan"], row["cc_gt_nan"] = bool(np.isnan(row["cc_fp32"])), bool(np.isnan(row["cc_gt"]))
        rows.append({k: row[k] for k in COLUMNS})
    return rows


def _same_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert list(ra) == list(rb)
        for k in ra:
            x, y = ra[k], rb[k]
            assert x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)), (k, x, y)
            assert type(x) is type(y), (k, type(x), type(y))


def _stack(n: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.stack([np.exp(-((yy - rng.uniform(0, shape[0])) ** 2 + (xx - rng.uniform(0, shape[1])) ** 2) / rng.uniform(4, 60)) for _ in range(n)])
    return out.astype(np.float32)


def _inputs(n: int = 9, shape: tuple[int, int] = (24, 20)) -> dict[str, Any]:
    cams = _stack(n, shape, 0)
    cams[1] = 0.0  # an all-zero CAM
    cams[2] = 4.0  # constant
    cams[3, 2, 2] = np.nan  # non-finite
    cams_fp32 = _stack(n, shape, 1)
    cams_fp32[4] = 0.0
    cams_fp32[5, 0, 0] = np.inf
    saliency = _stack(n, shape, 2)
    saliency[6] = 1.0
    reference = _stack(n, shape, 3)
    reference[7] = 0.0
    masks = np.zeros((n, *shape), np.float32)
    masks[:, 4:15, 3:12] = 1.0
    has_box = np.array([i % 3 != 0 for i in range(n)])
    masks[~has_box] = 0.0
    shard = SimpleNamespace(ids=[f"img{i}" for i in range(n)], labels=np.arange(n) % 3, masks=masks, has_box=has_box)
    extra = [{"deletion_auc": 0.1 * i, "insertion_auc": 0.2, "act_entropy": 1.0, "act_std": 0.5, "act_hoyer": 0.3, "act_gini": 0.4,
              "cam_channels": 8, "input_finite": True, "output_finite": i != 3} for i in range(n)]
    wsol = np.where(has_box, np.linspace(0, 1, n), np.nan)
    return {"cams": cams, "cams_fp32": cams_fp32, "reference": reference, "shard": shard, "saliency": saliency, "extra": extra, "wsol_iou": wsol,
            "pred": np.arange(n) % 2, "pred_fp32": np.zeros(n, dtype=np.int64)}


def _variant(precision: str) -> SimpleNamespace:
    return SimpleNamespace(model="m", format="onnx", runtime="onnxruntime", precision=precision, precision_effective=precision, manifest={"sha256": "abc"})


@pytest.mark.parametrize("emd_size", [0, 3, 8])
def test_image_rows_equal_the_per_pair_functions(emd_size: int) -> None:
    d = _inputs()
    before = {k: d[k].copy() for k in ("cams", "cams_fp32", "reference", "saliency")}
    for v, cams_fp32 in ((_variant("int8"), d["cams_fp32"]), (_variant("fp32"), d["cams"])):  # fp32: its own CAMs as the reference
        args = (v, "gradcampp", "mirror", d["cams"], cams_fp32, d["reference"], d["shard"], d["saliency"], "spectral_residual", d["pred"],
                d["pred_fp32"], "local", d["wsol_iou"], d["extra"], emd_size)
        maps = CamMaps("gradcampp", "mirror", d["cams"], cams_fp32, d["wsol_iou"], d["extra"])
        against = ShardMaps(d["shard"], d["reference"], d["saliency"], "spectral_residual", d["pred"], d["pred_fp32"])
        _same_rows(image_rows(v, maps, against, "local", emd_size), _reference_rows(*args))
    for k, arr in before.items():
        np.testing.assert_array_equal(d[k], arr)  # inputs untouched


def test_gap_rows_equal_compare() -> None:
    d = _inputs()
    v, ref = _variant("int8"), SimpleNamespace(format="tflite", runtime="litert")
    rows = gap_rows(v, ref, "eigencam", d["cams"], d["cams_fp32"], d["shard"].ids, d["pred"], d["pred_fp32"])
    for i, row in enumerate(rows):
        m = compare(d["cams"][i], d["cams_fp32"][i])
        assert row["pair"] == "onnx/onnxruntime v. tflite/litert" and row["agrees"] == bool(d["pred"][i] == d["pred_fp32"][i])
        for k in ("sim", "cc", "kld"):
            assert row[k] == m[k] or (math.isnan(row[k]) and math.isnan(m[k]))


def test_rows_of_nonfinite_outputs_carry_no_number_read_off_them() -> None:
    """Image 3's outputs were NaN (its `pred` NONFINITE), image 5's fp32 reference's were: image 3 has no pred,
    top-1, agreement or metric; image 5 keeps its own pred and GT / saliency metrics but nothing "v. fp32"."""
    d = _inputs()
    pred, pred_fp32 = d["pred"].copy(), d["pred_fp32"].copy()
    pred[3], pred_fp32[5] = NONFINITE, NONFINITE
    maps = CamMaps("gradcampp", "mirror", d["cams"], d["cams_fp32"], d["wsol_iou"], d["extra"])
    rows = image_rows(_variant("int8"), maps, ShardMaps(d["shard"], d["reference"], d["saliency"], "spectral_residual", pred, pred_fp32), "local", 3)
    bad, ref_bad, good = rows[3], rows[5], rows[8]
    assert bad["pred"] is None and bad["top1_correct"] is None and bad["agrees_fp32"] is None and not bad["output_finite"]
    assert all(math.isnan(bad[k]) for k in FROM_OUTPUTS) and bad["cc_fp32_nan"]
    assert ref_bad["pred"] == int(pred[5]) and ref_bad["agrees_fp32"] is None and all(math.isnan(ref_bad[k]) for k in FROM_REFERENCE)
    assert not math.isnan(ref_bad["cc_sal"])
    assert good["pred"] == int(pred[8]) and isinstance(good["top1_correct"], bool) and isinstance(good["agrees_fp32"], bool) and not math.isnan(good["cc_fp32"])
    gaps = gap_rows(_variant("int8"), SimpleNamespace(format="tflite", runtime="litert"), "eigencam", d["cams"], d["cams_fp32"], d["shard"].ids, pred, pred_fp32)
    assert gaps[3]["agrees"] is None and math.isnan(gaps[3]["cc"]) and gaps[5]["agrees"] is None and math.isnan(gaps[5]["sim"])
    assert isinstance(gaps[8]["agrees"], bool) and not math.isnan(gaps[8]["cc"])


def test_finite_top1_never_reads_a_class_off_nan() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [np.nan] * 3, [0.2, np.inf, 0.1], [3.0, 1.0, 2.0]], np.float32)
    feats = np.ones((4, 2, 2, 2), np.float32)
    feats[3, 1, 0, 0] = np.nan
    assert finite_top1(logits).tolist() == [1, NONFINITE, NONFINITE, 0]
    assert finite_top1(logits, feats).tolist() == [1, NONFINITE, NONFINITE, NONFINITE]


def test_accuracy_and_agreement_cover_finite_predictions_and_count_the_rest(tmp_path: Any) -> None:
    """An all-NaN variant is accuracy NaN with every image counted, never 0.1 with agreement 1.0 (argmax 0 = 0)."""
    labels = np.array([0, 1, 2, 0, 1, 0])
    result = {"init_s": 0.01, "first_s": 0.002, "samples_s": [0.001] * 5, "batch_size": 1}

    def variant(precision: str, preds: list[int]) -> Variant:
        return Variant("m", "onnx", precision, "onnxruntime", tmp_path, {"sha256": precision, "size_bytes": 10}, result=result, preds=np.array(preds))

    fp32 = variant("fp32", [0, 1, 2, 0, 2, 0])
    half = variant("int16", [0, NONFINITE, 2, 1, NONFINITE, NOT_PREDICTED])  # 2 non-finite, 1 not predicted
    dead = variant("int8", [NONFINITE] * 6)
    table = variant_table([fp32, half, dead], labels, "local").set_index("precision")
    assert table.loc["fp32", "nonfinite_outputs"] == 0 and table.loc["fp32", "accuracy"] == 5 / 6
    assert table.loc["int16", "nonfinite_outputs"] == 2 and table.loc["int16", "images"] == 3
    assert table.loc["int16", "accuracy"] == 2 / 3 and table.loc["int16", "agrees_fp32"] == 2 / 3
    assert table.loc["int8", "nonfinite_outputs"] == 6 and table.loc["int8", "images"] == 0
    assert math.isnan(table.loc["int8", "accuracy"]) and math.isnan(table.loc["int8", "agrees_fp32"])
    assert dead.nonfinite_outputs == 6 and fp32.nonfinite_outputs == 0
