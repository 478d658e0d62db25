"""Stage 1, prepare: reject bad input before any work, then the fp32 host model of each ModelSpec (the
user's weights, or trained on the data and cached by everything that produced it)."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgecam.cache import installed_versions
from edgecam.errors import ConfigError

if TYPE_CHECKING:
    from edgecam.config import ModelSpec, RunConfig
    from edgecam.data.datasets import Datasets

Progress = Callable[[str, float], None]


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's numbers depend on (the manifest; artifact cache keys)."""
    return {"python": platform.python_version(), **installed_versions(("edgecam", "torch", "torchvision", "onnx", "onnxruntime", "grad-cam", "numpy"))}


def training_needs(cfg: "RunConfig") -> list[str]:
    """What in `cfg` trains on the training split's labelled images (not only reads it for calibration)."""
    needs = [f"models.name = {m.name!r} has no weights and is not pretrained: it is trained" for m in cfg.models if not m.weights and not m.pretrained and not m.is_files]
    if cfg.export.quant == "qat" and any(p != "fp32" for p in cfg.export.precisions):
        needs.append('export.quant = "qat" fine-tunes the quantized models')
    if cfg.lowbit.schemes:
        needs.append("lowbit.schemes fine-tunes the low-bit models")
    return needs


def check_training_data(cfg: "RunConfig", data: "Datasets") -> None:
    """Refuse, before any work, what the training / calibration split cannot give: calibration images for
    quantized precisions, labelled images apart from the evaluated ones for training and QAT."""
    folder = data.source.get("root", data.source.get("dataset", "the data"))
    exported = any(not m.is_files for m in cfg.models)  # a model given by its files is not quantized by edgecam
    if exported and any(p != "fp32" for p in cfg.export.precisions) and data.n_train == 0:
        raise ConfigError(f"{folder}: no image left for calibration ({', '.join(p for p in cfg.export.precisions if p != 'fp32')} need some); "
                          "set data.calib_path to a folder of calibration images, or export fp32 only")
    needs = training_needs(cfg)
    if not needs:
        return
    if data.train_is_test:
        raise ConfigError(f"{folder}: no class has two images, so the only images to train on are the evaluated ones; {'; '.join(needs)}. "
                          'Set data.calib_path to a folder of training images (class folders), give `weights` or `pretrained = true`, and export.quant = "ptq"')
    if not data.train_labelled:
        raise ConfigError(f"data.calib_path ({data.source.get('calibration', {}).get('from')}): its images have no labels (use class folders named like the "
                          f"data's classes); {'; '.join(needs)}. Unlabelled images serve PTQ calibration only")


def check_normalisation(mspec: "ModelSpec", data: "Datasets") -> None:
    """Packaged weights expect the normalisation they were trained with: other mean / std give a model that
    runs and is wrong, so they are refused before any work, naming the values to set."""
    from edgecam.models import check_pretrained

    packaged = check_pretrained(mspec.name, data.n_classes) if mspec.pretrained else None
    if packaged is None:
        return
    if not (np.allclose(data.mean, packaged.mean, atol=1e-4) and np.allclose(data.std, packaged.std, atol=1e-4)):
        want = lambda v: "[" + ", ".join(f"{x:.6f}" for x in v) + "]"  # noqa: E731
        raise ConfigError(f"models.pretrained ({mspec.name}): its weights ({packaged.package}) expect inputs normalised with mean {want(packaged.mean)}, "
                          f"std {want(packaged.std)}; the data uses mean {want(data.mean)}, std {want(data.std)}: set data.mean and data.std to those values")


def preflight(cfg: "RunConfig", data: "Datasets") -> None:
    """Reject bad input before any work: the training / calibration split gives what the run needs, every
    model builds, its weights file loads and fits, and it takes the data's input shape and gives one logit
    per class. Errors name the model, file and what was expected."""
    import torch

    from edgecam.models import build_model

    check_training_data(cfg, data)
    probe_x = torch.from_numpy(np.ascontiguousarray(data.test_batch([0]).x))
    for m in cfg.models:
        if m.is_files:
            from edgecam.bench.model_files import check_file_model

            check_file_model(m, data)
            continue
        check_normalisation(m, data)
        model, _layer = build_model(m.name, data.n_classes, m.weights, m.target_layer, m.pretrained)
        try:
            with torch.no_grad():
                logits = model(probe_x)
        except Exception as exc:  # noqa: BLE001 - any failure here is a shape / dtype mismatch with the data
            raise ConfigError(f"models.name ({m.name}): the model does not accept the data's input of shape {tuple(probe_x.shape[1:])} (C, H, W): {type(exc).__name__}: {exc}") from None
        if tuple(logits.shape) != (1, data.n_classes):
            raise ConfigError(f"models.name ({m.name}): expected logits of shape (batch, {data.n_classes}) for the data's {data.n_classes} classes, got {tuple(logits.shape)}")


def prepare_model(mspec: "ModelSpec", cfg: "RunConfig", data: "Datasets", progress: Progress | None = None) -> tuple[Any, str, dict[str, Any]]:
    """fp32 model for `mspec`: the user's weights, or trained on the data (cached by what produced it).
    Returns (model, CAM target layer, checkpoint facts for the manifest, incl. `sha256` and `trained_now`)."""
    from edgecam.cache import cache_dir, sha256_file
    from edgecam.models import TORCHVISION_WEIGHTS_PREFIX, build_model, check_pretrained, resolve_entry, state_dict_sha256, torchvision_weights_info
    from edgecam.models.train import cached_checkpoint, train_classifier

    if mspec.pretrained:
        model, layer = build_model(mspec.name, data.n_classes, None, mspec.target_layer, pretrained=True)
        packaged = check_pretrained(mspec.name, data.n_classes)
        meta = {"sha256": state_dict_sha256(model), "trained_now": False,
                "source": f"pretrained: {packaged.package}" if packaged else f"pretrained: {mspec.name} as the factory returns it"}
        if packaged is not None:
            meta["file"], meta["file_sha256"] = str(packaged.file()), sha256_file(packaged.file())
    elif mspec.weights:
        model, layer = build_model(mspec.name, data.n_classes, mspec.weights, mspec.target_layer)
        weights_file = mspec.weights
        if str(mspec.weights).startswith(TORCHVISION_WEIGHTS_PREFIX):  # the hub-cache file build_model just loaded
            weights_file = str(torchvision_weights_info(mspec.name, str(mspec.weights)[len(TORCHVISION_WEIGHTS_PREFIX):])["file"])
        meta: dict[str, Any] = {"sha256": sha256_file(weights_file), "source": str(mspec.weights), "file": str(weights_file), "trained_now": False}
    else:
        import torch

        tspec = mspec.train_spec(cfg.train)
        key = {"model": mspec.name, "classes": data.n_classes, "data": data.fingerprint, "train": tspec.key(), "torch": torch.__version__, "norm": [data.mean, data.std]}
        layer = resolve_entry(mspec.name, mspec.target_layer).target_layer
        model, _ckpt, meta, trained = cached_checkpoint(
            key,
            cache_dir() / "checkpoints" / mspec.name,
            lambda: _seeded(tspec.seed, lambda: build_model(mspec.name, data.n_classes, None, mspec.target_layer)[0]),
            lambda m: train_classifier(m, data.train_x, data.train_y, tspec, progress, mspec.name),
        )
        meta = {**meta, "trained_now": trained}
    meta["host_fp32_accuracy"] = host_accuracy(model, data)
    return model, layer, meta


def host_accuracy(model: Any, data: "Datasets", shard_size: int = 256) -> float:
    """Top-1 accuracy of the host fp32 model on the whole test split, shard by shard, in forwards bounded by
    input pixels (`host_batch_size`): host memory does not grow with the resolution."""
    from edgecam.explain.cams import host_batch_size
    from edgecam.models.train import accuracy

    batch = host_batch_size(*data.input_shape[1:])
    correct = sum(round(accuracy(model, s.x, s.labels, batch) * len(s)) for s in data.iter_test_shards(shard_size))
    return float(correct / max(1, data.n_test))


def _seeded(seed: int, fn: Callable[[], Any]) -> Any:
    """Call `fn` with torch's global RNG seeded: weight initialisation must not depend on what ran before."""
    import torch

    torch.manual_seed(seed)
    return fn()
