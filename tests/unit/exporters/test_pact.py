"""PACT low-bit QAT (2411.05858's set-up): the activation and weight quantizers follow the papers' equations,
the bit plan of the mixed scheme, 4-bit beats 2-bit on digits after a short fine-tune, the weights hold at
most 2^k values per layer, CAMs are compared with fp32, and the INT4 QDQ graph runs in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from edgecam.bench.studies.lowbit import evaluate
from edgecam.errors import ConfigError
from edgecam.exporters.quantize.pact import (
    HOST_SIMULATION,
    DorefaWeight,
    PactReLU,
    PactSpec,
    PrecisionUnsupported,
    effective_weights,
    export_onnx_lowbit,
    integer_weights,
    ort_lowbit_support,
    pact_finetune,
    plan_bits,
)
from edgecam.models import build_model

RECIPE = {"epochs": 2, "samples": 512}  # 16 optimiser steps per bit width: "a few seconds" of fine-tuning


def test_pact_activation_is_clip_then_k_bit_grid_with_the_papers_gradients() -> None:
    """Eq. 1-2: y_q = round(clip(x, 0, alpha) / s) * s; Eq. 3: d/d alpha = 1 where x >= alpha (STE)."""
    act = PactReLU(bits=2, alpha=1.5)
    x = torch.linspace(-1, 3, 401, requires_grad=True)
    y = act(x)
    step = 1.5 / 3
    expected = torch.round(torch.clamp(x.detach(), 0, 1.5) / step) * step
    assert torch.allclose(y.detach(), expected)
    assert len(torch.unique(y.detach())) == 4  # 2^k levels: 0, 0.5, 1.0, 1.5
    y.sum().backward()
    inside = (x.detach() > 0) & (x.detach() < 1.5)
    assert torch.equal(x.grad, inside.float())  # straight through inside the clip range, zero outside
    assert act.alpha.grad.item() == float((x.detach() >= 1.5).sum())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dorefa_weights_take_at_most_2_to_the_k_values_and_pass_gradients(bits: int) -> None:
    torch.manual_seed(bits)
    w = (torch.randn(64, 32, 3, 3) * 0.1).requires_grad_(True)
    quant = DorefaWeight(bits)
    wq = quant(w)
    assert len(torch.unique(wq.detach())) == 2**bits  # a 2^k grid, every level used by 18k weights
    q, step = quant.integer(w.detach())
    assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1
    assert torch.allclose(wq.detach(), q * step)
    wq.pow(2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_mixed_scheme_puts_first_and_last_layers_at_4_bits() -> None:
    model, _ = build_model("tinycnn", 10)
    layer_bits, act_bits = plan_bits(model, PactSpec.scheme("mixed"))
    assert layer_bits == {"features.0.0": 4, "features.1.0": 2, "features.2.0": 2, "features.3.0": 2, "classifier": 4}
    # an activation has the bits of the layer that reads it: the last ReLU feeds the 4-bit classifier
    assert act_bits == {"features.0.2": 2, "features.1.2": 2, "features.2.2": 2, "features.3.2": 4}
    assert set(plan_bits(model, PactSpec.scheme("int4"))[0].values()) == {4}
    assert PactSpec.scheme("mixed").label == "mixed-int4/int2" and PactSpec.scheme("int2").label == "int2"


def test_bad_specs_and_models_are_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"pact.bits: expected an integer bit width in \[2, 8\], got 1"):
        PactSpec(bits=1)
    with pytest.raises(ConfigError, match=r"pact scheme: expected one of int2, int4, mixed, got 'int3'"):
        PactSpec.scheme("int3")
    with pytest.raises(ConfigError, match=r"pact.samples: expected a positive integer"):
        PactSpec(samples=0)
    model, _ = build_model("efficientnet_b0", 10)
    with pytest.raises(ConfigError, match=r"PACT quantizes ReLU / ReLU6 outputs; this model has other activations at features.0.2"):
        plan_bits(model, PactSpec())


@pytest.fixture(scope="module")
def digits_model(session_cache: Path, quick_config: Any, data: Any) -> tuple[Any, str, Any]:
    """The quickstart tinycnn (the session's cached checkpoint, shared with the exporter tests)."""
    from edgecam.bench.prepare import prepare_model

    torch.set_flush_denormal(True)
    model, layer, meta = prepare_model(quick_config.models[0], quick_config, data)
    return model, layer, meta


@pytest.fixture(scope="module")
def pact_results(digits_model: tuple[Any, str, Any], data: Any) -> dict[str, Any]:
    model, _layer, _meta = digits_model
    return {s: pact_finetune(model, PactSpec.scheme(s, **RECIPE), data.train_x, data.train_y) for s in ("int4", "mixed", "int2")}


def test_digits_accuracy_falls_from_4_to_2_bits_and_cams_are_compared(digits_model, pact_results, data) -> None:
    """2411.05858's qualitative finding on digits: 4-bit >= mixed and 2-bit accuracy; the quantized Grad-CAM++
    maps compared with fp32 by SIM / CC / KLD. Figures are printed (run with -s to see them)."""
    model, layer, _meta = digits_model
    rows = {s: evaluate(r, model, layer, data.test_x, data.test_y, cam_images=32) for s, r in pact_results.items()}
    for s, row in rows.items():
        print(f"PACT {row['precision']:<16} acc {row['accuracy']:.4f} (fp32 {row['accuracy_fp32']:.4f})  SIM {row['sim_mean']:.3f}  CC {row['cc_mean']:.3f}  KLD {row['kld_mean']:.3f}  fine-tune {pact_results[s].stats['qat_seconds']:.1f}s")
        assert row["execution"] == HOST_SIMULATION
        assert 0.0 < row["sim_mean"] <= 1.0 and -1.0 <= row["cc_mean"] <= 1.0 and row["kld_mean"] >= 0.0
    assert rows["int4"]["accuracy"] >= rows["int2"]["accuracy"]
    assert rows["int4"]["accuracy"] >= rows["mixed"]["accuracy"]
    assert rows["int4"]["accuracy"] >= rows["int4"]["accuracy_fp32"] - 0.03  # 4 bits nearly lossless here
    assert rows["int2"]["accuracy"] > 0.3  # fine-tuned, not broken (chance is 0.1)
    assert rows["int4"]["cc_mean"] > 0.9  # the 4-bit maps stay close to the fp32 ones


def test_fine_tuned_weights_take_at_most_2_to_the_k_values_per_layer(pact_results) -> None:
    for scheme, result in pact_results.items():
        weights = effective_weights(result.model)
        assert set(weights) == set(result.layer_bits)
        for layer, w in weights.items():
            k = result.layer_bits[layer]
            assert 2 < len(np.unique(w)) <= 2**k, (scheme, layer, len(np.unique(w)))
        ints = integer_weights(result.model)
        assert all(np.array_equal(weights[n] != 0, q != 0) for n, (q, _s, _b) in ints.items())
    mixed = pact_results["mixed"]
    assert len(np.unique(effective_weights(mixed.model)["features.0.0"])) > 4  # the first layer really has 4 bits


def test_int4_qdq_graph_runs_in_onnx_runtime(digits_model, pact_results, data, tmp_path: Path) -> None:
    """ONNX INT4 weights / UINT4 activations (opset 21): the graph encodes the host simulation exactly (no
    ORT optimisation), and at the level ORT loads it by default the top-1 answers agree."""
    from conftest import ort_outputs

    from edgecam.data.datasets import MEAN, STD
    from edgecam.exporters.base import ModelInfo
    from edgecam.runtimes.onnxruntime import OnnxRuntime

    reason = ort_lowbit_support()
    if reason is not None:
        pytest.skip(f"labelled skip: {reason}")
    model, layer, meta = digits_model
    result = pact_results["int4"]
    info = ModelInfo("tinycnn", 10, layer, (3, 64, 64), MEAN, STD, meta["sha256"])
    x = data.test_x[:64]
    try:
        art = export_onnx_lowbit(result, info, tmp_path / "int4", check_images=x)
    except PrecisionUnsupported as exc:
        pytest.skip(f"labelled skip: {exc}")
    graph = onnx.load(str(art.path))
    types = {i.name: onnx.TensorProto.DataType.Name(i.data_type) for i in graph.graph.initializer}
    assert sum(t == "INT4" for t in types.values()) == 2 * len(result.layer_bits)  # weights + their zero points
    assert sum(t == "UINT4" for t in types.values()) == len(result.activation_bits)
    assert not any(n.op_type == "Clip" for n in graph.graph.node)
    assert art.manifest["precision_effective"] == "int4" and art.manifest["size_bytes"] < 100_000
    with torch.no_grad():
        feats: list[torch.Tensor] = []
        hook = result.model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: feats.append(o))
        ref = result.model(torch.from_numpy(x)).numpy()
        hook.remove()
    with OnnxRuntime(str(art.path), graph_optimization="disable") as rt:
        exact = rt.run({"input": x})
    # exact up to rounding ties: an activation that lands on a rounding boundary (x / s = k + 0.5 in float32) can
    # round the other way in ORT's order of float operations: one UINT4 step (alpha / 15) in that element,
    # ~1e-3 in that image's logits. At most 0.1% of the CAM-layer elements may differ, by at most one step, and
    # at most 5% of the images' logits, by at most 1%.
    diff, scale = np.abs(exact["features"] - feats[0].numpy()), max(1.0, float(feats[0].abs().max()))
    assert float((diff > 1e-4 * scale).mean()) <= 1e-3 and diff.max() <= scale / 14, (float((diff > 1e-4 * scale).mean()), float(diff.max()), scale)
    diff, scale = np.abs(exact["logits"] - ref), max(1.0, float(np.abs(ref).max()))
    assert float((diff.max(1) > 1e-4 * scale).mean()) <= 0.05 and diff.max() <= 1e-2 * scale, (float((diff.max(1) > 1e-4 * scale).mean()), float(diff.max()))
    level = art.manifest["runtime_options"]["graph_optimization"]
    default = ort_outputs(art.directory, x)  # the adapter applies the manifest's optimisation level
    agreement = float((default["logits"].argmax(1) == ref.argmax(1)).mean())
    print(f"ORT int4 at graph_optimization={level}: top-1 agreement with host simulation {agreement:.3f}, rejected levels {sorted(art.manifest['quantization']['ort_levels_rejected'])}")
    assert agreement >= 0.9 and agreement == art.manifest["quantization"]["check_vs_host_simulation"]["top1_agreement"]


def test_more_than_4_bits_is_a_labelled_skip_for_onnx_int4(digits_model, data, tmp_path: Path) -> None:
    from edgecam.data.datasets import MEAN, STD
    from edgecam.exporters.base import ModelInfo

    model, layer, meta = digits_model
    result = pact_finetune(model, PactSpec(bits=6, epochs=0, samples=64), data.train_x, data.train_y)
    info = ModelInfo("tinycnn", 10, layer, (3, 64, 64), MEAN, STD, meta["sha256"])
    with pytest.raises(PrecisionUnsupported, match=r"int6: ONNX INT4 QDQ holds at most 4 bits; layers features.0.0"):
        export_onnx_lowbit(result, info, tmp_path / "int6")
    assert not (tmp_path / "int6").exists()
