"""Explanation-sensitivity ranking and plan (`bench/studies/sensitivity.py`) on the session's tinycnn int8 artifact."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest

from edgecam.bench.studies.sensitivity import Simulator, fidelity, plan, plan_result, rank, ranking_images, sqnr_db
from edgecam.config import SensitivitySpec
from edgecam.exporters.quantize.groups import qdq_groups

# groups after the CAM layer (`features`): the CAM of a label target cannot move when they go to float
AFTER_CAM = ("view", "model.classifier.weight", "logits")


@pytest.fixture(scope="module")
def setup(trained_tinycnn: Any) -> dict[str, Any]:
    t = trained_tinycnn
    spec = SensitivitySpec(enabled=True, images=48, seed=3)
    x, y = ranking_images(t.data, spec)
    paths = {p: t.artifacts[p] / "model.onnx" for p in ("fp32", "int8")}
    return {"t": t, "spec": spec, "x": x, "y": y, "paths": paths, "qdq": onnx.load(str(paths["int8"])), "fp32": onnx.load(str(paths["fp32"]))}


def _rank(s: dict[str, Any], target: str, x: np.ndarray | None = None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    sim = Simulator(s["fp32"], s["x"] if x is None else x, s["y"], "gradcampp", target, 16)
    return rank(s["qdq"], s["fp32"], sim, {})


def test_ranking_images_are_a_seeded_training_subset(setup: dict[str, Any]) -> None:
    t, spec = setup["t"], setup["spec"]
    x2, y2 = ranking_images(t.data, spec)
    assert setup["x"].shape == (48, 3, 64, 64) and np.array_equal(setup["x"], x2) and np.array_equal(setup["y"], y2)
    other, _ = ranking_images(t.data, SensitivitySpec(enabled=True, images=48, seed=4))
    assert not np.array_equal(other, setup["x"])
    train = t.data.calibration_arrays(48, 3)[0]
    assert all(any(np.array_equal(img, tr) for tr in train) for img in setup["x"][:3])  # training images, not test ones


def test_groups_after_the_cam_layer_have_delta_zero(setup: dict[str, Any]) -> None:
    """With label targets the CAM depends only on `features` and the fp32 head: leaving a group after the CAM
    layer in float changes logits (top-1 may move), never the map."""
    rows, base = _rank(setup, "label")
    by = {r["group"]: r for r in rows}
    assert set(by) == {g.name for g in qdq_groups(setup["qdq"])}
    for name in AFTER_CAM:
        for col in ("delta_cc", "delta_sim", "delta_kld", "only_delta_cc", "only_delta_sim", "only_delta_kld"):
            assert by[name][col] == 0.0, (name, col, by[name][col])
    before = [r for r in rows if r["group"] not in AFTER_CAM and r["kind"] == "weight"]
    assert any(abs(r["delta_cc"]) > 0 for r in before)  # a group before the CAM layer does move it
    assert 0.9 < base["cc"] < 1.0 and base["top1_agreement"] > 0.8


def test_ranking_is_deterministic_and_sorted(setup: dict[str, Any]) -> None:
    a, base_a = _rank(setup, "pred")
    b, base_b = _rank(setup, "pred")
    pd.testing.assert_frame_equal(pd.DataFrame(a), pd.DataFrame(b))  # bit for bit (NaN-aware: no SQNR passed here)
    assert base_a == base_b
    assert [r["rank"] for r in a] == list(range(1, len(a) + 1))
    gains = [r["delta_cc"] for r in a]
    assert gains == sorted(gains, reverse=True)
    top = a[0]
    # the top group's fallback does recover CC over the whole artifact
    assert top["delta_cc"] > 0 and math.isclose(top["fallback_cc"], base_a["cc"] + top["delta_cc"], rel_tol=1e-9)


def test_plan_keeps_only_groups_that_raise_the_cc_until_target_or_budget(setup: dict[str, Any]) -> None:
    sim = Simulator(setup["fp32"], setup["x"], setup["y"], "gradcampp", "pred", 16)
    rows, base = rank(setup["qdq"], setup["fp32"], sim, {})
    steps = plan(setup["qdq"], setup["fp32"], sim, rows, SensitivitySpec(enabled=True, cc_target=1.0, budget=2), base)
    positive = [r["group"] for r in rows if r["delta_cc"] > 0]
    assert [s["group"] for s in steps[1:]] == positive[: len(steps) - 1]  # tried in ranking order
    groups, result = plan_result(steps)
    assert len(groups) == 2 and steps[0]["cc"] == base["cc"]
    # every kept step raised the CC over the previous kept one; every rejected one did not
    current = base["cc"]
    for s in steps[1:]:
        assert s["kept"] == (s["cc"] > current)
        current = s["cc"] if s["kept"] else current
    assert result["cc"] == current > base["cc"]
    # each row is the groups kept before it plus its own: the last one, simulated again, gives its figures
    from edgecam.exporters.quantize.groups import with_fallback

    last = steps[-1]
    before = [s["group"] for s in steps[1:-1] if s["kept"]]
    again = fidelity(sim.run(with_fallback(setup["qdq"], setup["fp32"], [*before, last["group"]])), sim.reference())
    assert again["cc"] == pytest.approx(last["cc"], abs=1e-12)
    reached = plan(setup["qdq"], setup["fp32"], sim, rows, SensitivitySpec(enabled=True, cc_target=base["cc"] - 1e-6, budget=5), base)
    assert len(reached) == 1 and plan_result(reached) == ([], reached[0])  # the artifact already meets the target: nothing goes to float


def test_each_gain_has_a_paired_bootstrap_interval_around_it(setup: dict[str, Any]) -> None:
    rows, _base = _rank(setup, "pred")
    for r in rows:
        if r["delta_cc"] == 0:
            assert r["delta_cc_ci_lo"] == r["delta_cc_ci_hi"] == 0  # no image moved: a degenerate interval at 0
        else:
            assert r["delta_cc_ci_lo"] <= r["delta_cc"] <= r["delta_cc_ci_hi"] and r["delta_cc_ci_lo"] < r["delta_cc_ci_hi"]


def test_fidelity_of_a_model_with_itself_is_exact(setup: dict[str, Any]) -> None:
    sim = Simulator(setup["fp32"], setup["x"][:8], setup["y"][:8], "gradcampp", "pred", 8)
    ev = sim.run(setup["fp32"])
    f = fidelity(ev, ev)
    assert f["cc"] == pytest.approx(1.0) and f["sim"] == pytest.approx(1.0) and f["kld"] == pytest.approx(0.0, abs=1e-9) and f["top1_agreement"] == 1.0


def test_head_cam_equals_the_mirror_cam_of_the_host_model(setup: dict[str, Any]) -> None:
    """The ranking's CAM (fp32 ONNX head's gradients) is the device table's mirror CAM (host PyTorch head)."""
    from edgecam.explain.cams import CamContext, gradient_cams

    t, x = setup["t"], setup["x"][:8]
    sim = Simulator(setup["fp32"], x, setup["y"][:8], "gradcampp", "pred", 8)
    ev = sim.run(setup["qdq"])
    import onnxruntime as ort

    feats = ort.InferenceSession(str(setup["paths"]["int8"]), providers=["CPUExecutionProvider"]).run(["features"], {"input": x})[0]
    mirror = gradient_cams(CamContext(t.model, t.layer, x), "gradcampp", ev.preds, feats)
    np.testing.assert_allclose(sim.cams(feats, ev.preds), mirror, atol=1e-4)


def test_sqnr_accumulates_exactly_like_one_onnxruntime_call(setup: dict[str, Any], tmp_path: Path) -> None:
    """Chunked SQNR = ORT's `compute_signal_to_quantization_noice_ratio` over all images at once (a group with
    no folded activation: `view`); weight SQNR is ORT's `compute_weight_error`."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    x = setup["x"][:20]
    chunked = sqnr_db(setup["paths"]["int8"], setup["paths"]["fp32"], x, chunk=6)
    aug = tmp_path / "aug.onnx"
    dbg.modify_model_output_intermediate_tensors(str(setup["paths"]["int8"]), str(aug))
    pairs = dbg.create_activation_matching(dbg.collect_activations(str(aug), iter([{"input": x}])))
    whole = {name: dbg.compute_signal_to_quantization_noice_ratio(p["pre_qdq"], p["post_qdq"]) for name, p in pairs.items()}
    assert chunked["view"] == pytest.approx(whole["view"], abs=1e-4)  # float64 sums vs ORT float32 norms
    weights = dbg.compute_weight_error(dbg.create_weight_matching(str(setup["paths"]["fp32"]), str(setup["paths"]["int8"])))
    assert chunked["model.classifier.weight"] == pytest.approx(weights["model.classifier.weight"])
    # a folded ReLU's group compares the ReLU'd tensor: far above ORT's raw pre-ReLU pairing
    assert chunked["features"] > whole["features"] + 10
    assert all(math.isfinite(chunked[g.name]) for g in qdq_groups(setup["qdq"]))
