"""Saliency-guided training (Ismail et al. 2021, Algorithm 1) is really applied: the mask takes the configured
fraction of the least salient input features, the KL term is zero exactly when only irrelevant features are
masked and positive otherwise, it falls as a plain model learns to ignore the masked features, and fp32
training and PACT QAT both run with it (and without it, unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from paper_datasets import ensure_mnist_5k

from edgecam.errors import ConfigError
from edgecam.models.saliency_guided import GuidanceLog, SaliencyGuidance, guided_loss, masked_input


def _linear_on(pixels: int, relevant: int) -> torch.nn.Module:
    """A linear model that reads only the first `relevant` of `pixels` features (the rest have zero weight)."""
    lin = torch.nn.Linear(pixels, 3, bias=False)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, :relevant] = torch.randn(3, relevant, generator=torch.Generator().manual_seed(0))
    return torch.nn.Sequential(torch.nn.Flatten(), lin)


def test_the_mask_takes_the_least_salient_fraction() -> None:
    x = torch.rand(4, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    saliency = torch.arange(100, dtype=torch.float32).repeat(4, 1).view(4, 1, 10, 10)  # feature i has saliency i
    masked, fraction = masked_input(x, saliency, 0.3, torch.Generator().manual_seed(2))
    assert fraction == pytest.approx(0.3, abs=0.01)  # measured: the elements that changed
    changed = (masked != x).flatten(1)
    assert changed[:, 30:].sum() == 0  # the 70 most salient features are untouched
    assert changed[:, :30].float().mean() > 0.95  # the 30 least salient replaced (a random value may equal the old one)
    lo, hi = x.flatten(1).min(1).values, x.flatten(1).max(1).values
    m = masked.flatten(1)[:, :30]
    assert bool(((m >= lo[:, None]) & (m <= hi[:, None])).all())  # random values from the image's own range


def test_kl_is_zero_when_only_irrelevant_features_are_masked_and_positive_otherwise() -> None:
    model = _linear_on(100, 30)
    x = torch.rand(8, 1, 10, 10, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(4))
    ce = torch.nn.functional.cross_entropy(model(x), y)
    for k, kl_zero in ((0.5, True), (0.9, False)):  # 70 features have zero gradient: k = 0.5 masks only those
        log = GuidanceLog([], [])
        loss = guided_loss(model, x, y, SaliencyGuidance(k, 2.0), torch.Generator().manual_seed(5), log)
        assert log.masked_fraction[0] == pytest.approx(k, abs=0.01)
        if kl_zero:
            assert log.kl[0] == pytest.approx(0.0, abs=1e-7) and float(loss.detach()) == pytest.approx(float(ce.detach()), abs=1e-6)
        else:
            assert log.kl[0] > 1e-4 and float(loss.detach()) == pytest.approx(float(ce.detach()) + 2.0 * log.kl[0], rel=1e-5)
            # KL(f(X) || f(X~)) = sum p (log p - log q), p on the clean input: by hand, with the same mask
            xg = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(xg).gather(1, y[:, None]).sum(), xg)
            masked, _ = masked_input(x, grad.abs(), k, torch.Generator().manual_seed(5))
            with torch.no_grad():
                lp, lq = torch.log_softmax(model(x), 1), torch.log_softmax(model(masked), 1)
            forward_kl, reverse_kl = float((lp.exp() * (lp - lq)).sum(1).mean()), float((lq.exp() * (lq - lp)).sum(1).mean())
            assert log.kl[0] == pytest.approx(forward_kl, rel=1e-5) and abs(forward_kl - reverse_kl) > 1e-3 * forward_kl
    loss.backward()  # the guided loss trains the model: gradients reach its weights
    assert model[1].weight.grad is not None and float(model[1].weight.grad.abs().sum()) > 0


def test_the_kl_term_falls_while_a_plain_model_learns_under_guidance() -> None:
    """A plain MNIST model is not invariant to masking its least salient pixels (KL > 0); continued training
    with the guided loss (the QAT set-up of the study) makes it so: the KL term falls."""
    ensure_mnist_5k()
    from edgecam.data import DataSpec, load_data
    from edgecam.models import build_model
    from edgecam.models.train import TrainSpec, train_classifier

    torch.manual_seed(0)
    data = load_data(DataSpec(name="mnist", train_limit=1000))
    model, _ = build_model("mnistcnn", 10)
    plain = train_classifier(model, data.train_x, data.train_y, TrainSpec(epochs=3, batch_size=64))
    assert "sg_kl_first" not in plain  # off by default: the plain loss, no guided statistics
    guided = train_classifier(model, data.train_x, data.train_y, TrainSpec(epochs=3, batch_size=64, lr=1e-3, saliency_guided_k=0.5))
    assert guided["sg_masked_fraction"] == pytest.approx(0.5, abs=0.01) and guided["sg_steps"] == guided["steps"]
    assert guided["sg_kl_first"] > 0.01 and guided["sg_kl_last"] < 0.85 * guided["sg_kl_first"], guided


def test_pact_qat_runs_with_the_guided_loss() -> None:
    from edgecam.exporters.quantize.pact import PactSpec, pact_finetune

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    plain = pact_finetune(model, PactSpec(bits=4, epochs=1, batch_size=16, samples=64), x, y)
    guided = pact_finetune(model, PactSpec(bits=4, epochs=1, batch_size=16, samples=64, saliency_guided_k=0.25), x, y)
    assert "sg_kl_first" not in plain.stats and guided.stats["sg_steps"] == 4 and guided.stats["sg_masked_fraction"] == pytest.approx(0.25, abs=0.01)
    assert PactSpec(bits=4).to_dict() == {k: v for k, v in PactSpec(bits=4, saliency_guided_k=0.25).to_dict().items() if not k.startswith("saliency")}  # off: the old keys


@pytest.mark.parametrize(("k", "lam"), [(0.0, 1.0), (1.0, 1.0), (0.5, -1.0), (0.5, float("inf"))])
def test_bad_guidance_settings_are_refused(k: float, lam: float) -> None:
    from edgecam.models.train import TrainSpec

    with pytest.raises(ConfigError):
        SaliencyGuidance(k, lam)
    if k != 0.0:
        with pytest.raises(ConfigError, match="train.saliency_guided"):
            TrainSpec(saliency_guided_k=k, saliency_guided_lambda=lam)
