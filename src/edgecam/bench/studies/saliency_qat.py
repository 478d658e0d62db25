"""The study of arXiv 2411.05858, "Saliency Assisted Quantization for Neural Networks", as the paper did it:
explanations in the training loop (saliency-guided training, `models/saliency_guided.py`) with PACT QAT at
4-bit, mixed 4/2-bit and 2-bit (`exporters/quantize/pact.py`), on MNIST and Fashion-MNIST (`data/mnist.py`),
accuracy and saliency-map clarity side by side.

Per data set, two fp32 models are trained from the same seed, plain and saliency-guided (cached checkpoints),
then each is PACT-fine-tuned to every scheme, the guided one with the guided loss (its QAT keeps the
explanations in the loop). Every model is measured the same way on the first `clarity_images` test images,
for the labelled class:
- maps: input-gradient saliency |d f_y / d x| (Simonyan et al. 2014) and Grad-CAM++ (Chattopadhay et al. 2018)
  on the CAM layer;
- sparsity: Gini index (Hurley & Rickard 2009) and Shannon entropy (bits) of the map as a distribution: a
  clearer map is sparser (higher Gini, lower entropy);
- faithfulness: Deletion / Insertion AUC (Petsiuk et al. 2018) through the same model;
- agreement with the fp32 model of the same training: CC and SIM (Bylinskii et al. 2018) of the maps;
plus top-1 accuracy on the whole (limited) test split. Means with 95% percentile-bootstrap intervals.
Bit widths no runtime executes run in host simulation (PyTorch fake-quant) and say so; the 4-bit models are
also exported as ONNX INT4 / UINT4 QDQ and run on the device where ONNX Runtime loads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgecam.bench.studies.lowbit_device import int4_on_device, predictions
from edgecam.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgecam.bench.context import RunContext
    from edgecam.config import SaliencyQatSpec
    from edgecam.data.datasets import Datasets

FP32_EXECUTION = "host (PyTorch fp32)"
MAPS = ("input_gradient", "gradcampp")
MAP_METRICS = ("gini", "entropy_bits", "deletion_auc", "insertion_auc", "cc_vs_fp32", "sim_vs_fp32")
TRAININGS = {False: "plain", True: "saliency-guided"}


def input_gradient_maps(model: "torch.nn.Module", x: np.ndarray, targets: np.ndarray, batch: int = 128) -> np.ndarray:
    """|d logit_target / d x|, (N, H, W) (Simonyan, Vedaldi, Zisserman 2014, Sec. 3.1; they take the maximum
    over colour channels, this sums them: the same for the one channel of MNIST-like data)."""
    import torch

    out = []
    model.eval()
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)).requires_grad_(True)
        logits = model(xb)
        (grad,) = torch.autograd.grad(logits.gather(1, torch.from_numpy(targets[i : i + batch])[:, None]).sum(), xb)
        out.append(grad.abs().sum(1).numpy())
    return np.concatenate(out).astype(np.float32)


def map_entropy_bits(m: np.ndarray) -> float:
    """Shannon entropy (bits) of a map read as a distribution over pixels (`explain.metrics.to_distribution`)."""
    from edgecam.explain.metrics import to_distribution

    p = to_distribution(np.asarray(m, dtype=np.float64)).ravel()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) if p.size else float("nan")


def clarity(model: "torch.nn.Module", layer: str, x: np.ndarray, y: np.ndarray, reference: dict[str, np.ndarray] | None, steps: int = 16) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(maps, per-image metric arrays) of `model` on `x` for the labelled classes `y`: see the module docstring.
    `reference` (the fp32 model's maps) gives CC / SIM; None: this is the fp32 model (CC = SIM = 1)."""
    import torch

    from edgecam.explain.activations import gini
    from edgecam.explain.cams import CamContext, reference_cams
    from edgecam.explain.faithfulness import faithfulness_rows
    from edgecam.explain.metrics import cc, sim

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    model.eval()
    maps = {"input_gradient": input_gradient_maps(model, x, y), "gradcampp": reference_cams(CamContext(model, layer, x), "gradcampp", [int(t) for t in y]).astype(np.float32)}
    metrics: dict[str, np.ndarray] = {}
    for name, m in maps.items():
        faith = faithfulness_rows(forward, x, m, [int(t) for t in y], steps=steps, batch_size=256)
        metrics[f"{name}.gini"] = np.array([gini(a) for a in m])
        metrics[f"{name}.entropy_bits"] = np.array([map_entropy_bits(a) for a in m])
        metrics[f"{name}.deletion_auc"] = np.array([r["deletion_auc"] for r in faith])
        metrics[f"{name}.insertion_auc"] = np.array([r["insertion_auc"] for r in faith])
        ref = reference[name] if reference is not None else m
        metrics[f"{name}.cc_vs_fp32"] = np.array([cc(a, b) for a, b in zip(m, ref)])
        metrics[f"{name}.sim_vs_fp32"] = np.array([sim(a, b) for a, b in zip(m, ref)])
    return maps, metrics


def _rows(dataset: str, training: str, precision: str, execution: str, correct: np.ndarray, metrics: dict[str, np.ndarray], n_boot: int, seed: int,
          extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-format rows: one per metric (accuracy, then map x metric), mean and 95% bootstrap interval."""
    from edgecam.bench.stats import bootstrap_ci

    base = {"dataset": dataset, "training": training, "precision": precision, "execution": execution, **extra}
    rows = []
    for (map_name, metric), values in [(("-", "accuracy"), correct.astype(np.float64))] + [(tuple(k.split(".")), v) for k, v in metrics.items()]:
        lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
        finite = values[np.isfinite(values)]
        rows.append({**base, "map": map_name, "metric": metric, "mean": float(finite.mean()) if finite.size else float("nan"), "ci_low": lo, "ci_high": hi, "n": int(finite.size)})
    return rows


def _train_fp32(spec: "SaliencyQatSpec", dataset: str, data: "Datasets", guided: bool, log: Callable[[str], None]) -> tuple[Any, str, dict[str, Any]]:
    """The fp32 model of one (data set, training), from the checkpoint cache or trained now."""
    import torch

    from edgecam.cache import cache_dir
    from edgecam.models import build_model, resolve_entry
    from edgecam.models.train import TrainSpec, cached_checkpoint, train_classifier

    tspec = TrainSpec(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed,
                      saliency_guided_k=spec.k if guided else 0.0, saliency_guided_lambda=spec.lam)
    layer = resolve_entry(spec.model, None).target_layer
    key = {"model": spec.model, "classes": data.n_classes, "data": data.fingerprint, "train": tspec.key(), "torch": torch.__version__, "norm": [data.mean, data.std]}

    def build() -> Any:
        torch.manual_seed(spec.seed)
        return build_model(spec.model, data.n_classes)[0]

    model, _ckpt, meta, trained = cached_checkpoint(key, cache_dir() / "checkpoints" / spec.model, build, lambda m: train_classifier(m, data.train_x, data.train_y, tspec))
    log(f"saliency-QAT {dataset}: fp32 {TRAININGS[guided]} model {'trained' if trained else 'from the cache'} ({meta.get('train', {}).get('steps')} steps)")
    return model, layer, meta


def check(spec: "SaliencyQatSpec") -> None:
    """Before any work (`sweep.open_run`): every data set's files are there (the error says what to install)
    and the study's model takes one 1 x 28 x 28 image and gives 10 classes."""
    import torch

    from edgecam.data.mnist import fashion_mnist_files, mnist_5k_path
    from edgecam.models import build_model

    for dataset in spec.datasets:
        mnist_5k_path(spec.mnist_source) if dataset == "mnist" else fashion_mnist_files(spec.fashion_mnist_source)
    if spec.datasets:
        model, _layer = build_model(spec.model, 10)
        try:
            with torch.no_grad():
                out = model.eval()(torch.zeros(1, 1, 28, 28))
        except Exception as exc:  # noqa: BLE001 - any failure of the dry forward is the model not fitting the data
            raise ConfigError(f"saliency_qat.model = {spec.model!r} does not take the data's 1 x 28 x 28 grayscale images ({type(exc).__name__}: {exc}); "
                              "use mnistcnn or a model for one-channel 28 px input") from None
        if tuple(out.shape) != (1, 10):
            raise ConfigError(f"saliency_qat.model = {spec.model!r} gives output {tuple(out.shape)} for one image, expected (1, 10)")


def saliency_qat_study(ctx: "RunContext") -> list[dict[str, Any]]:
    """Every row of the study (`saliency_qat.csv`), each (data set, training, precision) one job of the run's
    store (a resumed run reuses them; the fp32 models come from the checkpoint cache)."""
    from edgecam.bench.store import Job, job_key
    from edgecam.data import DataSpec, load_data
    from edgecam.exporters.quantize.pact import HOST_SIMULATION, PactSpec, pact_finetune

    spec, log = ctx.cfg.saliency_qat, ctx.log
    rows: list[dict[str, Any]] = []
    for dataset in spec.datasets:
        data = load_data(DataSpec(name=dataset, source=spec.source(dataset), train_limit=spec.train_limit, seed=spec.seed))
        n_test = min(spec.test_limit, data.n_test)
        x_test, y_test = data.test_x[:n_test], data.test_y[:n_test]
        xc, yc = x_test[: spec.clarity_images], y_test[: spec.clarity_images]
        for guided in spec.guided:
            training = TRAININGS[guided]
            model, layer, meta = _train_fp32(spec, dataset, data, guided, log)
            common = {"kind": "saliency-qat", "dataset": dataset, "training": training, "data": data.fingerprint, "weights": meta["sha256"], "spec": spec.key(),
                      "images": n_test, "device": ctx.device_id or ctx.dspec.name}
            ref_maps, ref_metrics = clarity(model, layer, xc, yc, None, spec.steps)

            def fp32_job() -> Job:
                extra = {"train_stats": meta.get("train", {})}
                return Job({"rows": _rows(dataset, training, "fp32", FP32_EXECUTION, predictions(model, x_test) == y_test, ref_metrics, spec.bootstrap, spec.seed, extra)})

            job, _ = ctx.store.get_or_compute("saliency-qat", job_key(**common, precision="fp32"), fp32_job, lambda j: [float(r["mean"]) for r in j.meta["rows"]])
            rows += job.meta["rows"] if job is not None else []
            for scheme in spec.schemes:
                pspec = PactSpec.scheme(scheme, epochs=spec.qat_epochs, lr=spec.qat_lr, samples=spec.qat_samples, seed=spec.seed,
                                        saliency_guided_k=spec.k if guided else 0.0, saliency_guided_lambda=spec.lam)

                def scheme_job(pspec: PactSpec = pspec) -> Job:
                    result = pact_finetune(model, pspec, data.train_x, data.train_y)
                    _, metrics = clarity(result.model, layer, xc, yc, ref_maps, spec.steps)
                    extra: dict[str, Any] = {"layer_bits": result.layer_bits, "qat_stats": result.stats}
                    if spec.onnx and pspec.first_last_bits is None and pspec.bits == 4:
                        extra.update(int4_on_device(ctx, result, data, spec.model, layer, ctx.out_dir / "artifacts" / f"saliency-qat-{dataset}-{training}-{spec.model}-onnx-int4",
                                                    x_test, f"saliency-QAT {dataset} {training}"))
                    log(f"saliency-QAT {dataset} {training} {pspec.label}: fine-tuned in {result.stats['qat_seconds']:.0f} s")
                    return Job({"rows": _rows(dataset, training, pspec.label, HOST_SIMULATION, predictions(result.model, x_test) == y_test, metrics,
                                              spec.bootstrap, spec.seed, extra)})

                job, _ = ctx.store.get_or_compute("saliency-qat", job_key(**common, precision=pspec.to_dict()), scheme_job,
                                                  lambda j: [float(r["mean"]) for r in j.meta["rows"]])
                rows += job.meta["rows"] if job is not None else []
    return rows


def wide_table(rows: Any) -> Any:
    """(data set, training, precision) x the headline columns, each "mean [low, high]": what the CLI prints
    and the README shows."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return df
    cols = [("-", "accuracy"), ("input_gradient", "gini"), ("input_gradient", "entropy_bits"), ("input_gradient", "deletion_auc"), ("input_gradient", "insertion_auc"),
            ("gradcampp", "gini"), ("gradcampp", "deletion_auc"), ("gradcampp", "cc_vs_fp32"), ("input_gradient", "cc_vs_fp32")]
    out = []
    for (dataset, training, precision), grp in df.groupby(["dataset", "training", "precision"], sort=False):
        row: dict[str, Any] = {"dataset": dataset, "training": training, "precision": precision,
                               "execution": "host simulation" if "simulation" in str(grp["execution"].iloc[0]) else "host fp32"}
        for m, metric in cols:
            hit = grp[(grp["map"] == m) & (grp["metric"] == metric)]
            name = metric if m == "-" else f"{'IG' if m == 'input_gradient' else 'GC++'} {metric}"
            row[name] = f"{hit['mean'].iloc[0]:.3f} [{hit['ci_low'].iloc[0]:.3f}, {hit['ci_high'].iloc[0]:.3f}]" if len(hit) else "n/a"
        status = grp["ort_status"].dropna().iloc[0] if "ort_status" in grp and grp["ort_status"].notna().any() else ""
        if status:
            acc = grp["ort_accuracy"].dropna()
            row["ONNX Runtime"] = f"accuracy {acc.iloc[0]:.3f}" if len(acc) else str(status)[:60]
        else:
            row["ONNX Runtime"] = ""
        out.append(row)
    return pd.DataFrame(out)


def write(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """saliency_qat.csv (long format: one row per data set, training, precision, map and metric)."""
    import pandas as pd

    from edgecam.bench import outputs as files

    df = pd.DataFrame(rows)
    for col in ("train_stats", "qat_stats", "layer_bits"):
        if col in df:
            df[col] = df[col].map(lambda v: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else None)
    files.write_tables(out_dir, [(files.SALIENCY_QAT, df)])
