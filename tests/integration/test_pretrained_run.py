"""`pretrained = true` end to end: a custom factory's model is used as it returns it (never trained), its
state dict's hash keys the artifact cache and sits in the manifest; sample-set folders run: one image per
class (PTQ calibrates on the evaluated images, recorded), symlinked files, a separate calibration folder."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgecam.config import BenchSpec, DataSpec, ExplainSpec, ModelSpec, RunConfig, RuntimeSpec
from edgecam.errors import ConfigError

FACTORY = """
import torch
from torch import nn

SEED = {seed}

def small(num_classes):
    torch.manual_seed(SEED)  # 'pretrained': the same weights on every call, as a hub loader gives
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
"""


def _factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> str:
    mod = f"pretrained_factory_{seed}"
    (tmp_path / f"{mod}.py").write_text(FACTORY.format(seed=seed))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(mod, None)
    return f"{mod}:small"


def _photos(root: Path, per_class: int, link_from: Path | None = None) -> Path:
    """Three classes of real-photo crops (scikit-image's bundled photos); with `link_from`, the files are
    symlinks into that store (the ImageNet layout)."""
    import skimage.data

    sources = {"cat": skimage.data.chelsea(), "cup": skimage.data.coffee(), "rocket": skimage.data.rocket()}
    for cls, pixels in sources.items():
        for j in range(per_class):
            img = Image.fromarray(pixels[j * 10 :, j * 15 :]).convert("RGB")
            target = root / cls / f"{j}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            if link_from is None:
                img.save(target, quality=90)
            else:
                src = link_from / f"{cls}-{j}.jpg"
                src.parent.mkdir(parents=True, exist_ok=True)
                img.save(src, quality=90)
                target.symlink_to(src)
    return root


def _cfg(model: str, data: DataSpec, quant: str = "ptq") -> RunConfig:
    cfg = RunConfig(
        name="pretrained",
        data=data,
        models=(ModelSpec(model, pretrained=True, target_layer="2"),),
        runtimes=(RuntimeSpec("onnxruntime", threads=1),),
        bench=BenchSpec(warmup=1, iterations=3, memory=False),
        explain=ExplainSpec(methods=("gradcampp",), faithfulness=False, emd_size=0, bootstrap=100),
    )
    return cfg.replace(export=dataclasses.replace(cfg.export, precisions=("fp32", "int8"), quant=quant, calib_samples=8))


def _run(cfg: RunConfig, out: Path) -> dict[str, Any]:
    from edgecam.bench.sweep import run

    result = run(cfg, out, log=lambda m: None)
    assert not result["failed"]
    return json.loads((out / "manifest.json").read_text())


def test_pretrained_factory_is_never_trained_and_keys_caches_by_its_hash(session_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecam.models import build_model, state_dict_sha256

    folder = _photos(tmp_path / "one", 1, link_from=tmp_path / "store")  # one image per class, every file a symlink
    data = DataSpec(name="image-folder", path=str(folder), resize=48, crop=40, limit=None)
    ref_a = _factory(tmp_path, monkeypatch, 1)
    m = _run(_cfg(ref_a, data), tmp_path / "a")
    ck = m["models"][ref_a]["checkpoint"]
    assert ck["trained_now"] is False and ck["source"].startswith("pretrained:")
    assert ck["sha256"] == state_dict_sha256(build_model(ref_a, 3, target_layer="2", pretrained=True)[0])
    assert not (session_cache / "checkpoints" / ref_a).exists()  # nothing was trained, so nothing was saved
    assert m["data"]["calibration"]["from"].startswith("the evaluated images") and m["data"]["test_images"] == 3
    arts = sorted((tmp_path / "a" / "artifacts").glob("*/manifest.json"))
    assert len(arts) == 2 and all(json.loads(p.read_text())["source_checkpoint_sha256"] == ck["sha256"] for p in arts)
    again = _run(_cfg(ref_a, data), tmp_path / "a2")
    assert all(k.endswith("(cached)") for k in again["stages_s"] if k.startswith("export "))  # same weights: the cache answers
    ref_b = _factory(tmp_path, monkeypatch, 2)  # other weights, same architecture
    m_b = _run(_cfg(ref_b, data), tmp_path / "b")
    assert m_b["models"][ref_b]["checkpoint"]["sha256"] != ck["sha256"]
    exports_b = [k for k in m_b["stages_s"] if k.startswith("export ")]
    assert exports_b and not any(k.endswith("(cached)") for k in exports_b)  # new weights: new artifacts
    with pytest.raises(ConfigError, match=r"no class has two images.*export.quant = \"qat\" fine-tunes"):
        _run(_cfg(ref_a, data, quant="qat"), tmp_path / "qat")  # refused before any work
    assert not (tmp_path / "qat" / "manifest.json").exists()


def test_separate_calibration_folder_run(session_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated = _photos(tmp_path / "eval", 2)
    calib = _photos(tmp_path / "calib", 3)
    ref = _factory(tmp_path, monkeypatch, 3)
    m = _run(_cfg(ref, DataSpec(name="image-folder", path=str(evaluated), calib_path=str(calib), resize=48, crop=40, limit=None)), tmp_path / "run")
    assert m["data"]["test_images"] == 6 and m["data"]["calibration"] == {"images": 9, "from": str(calib), "labelled": True}
    rows = __import__("pandas").read_parquet(tmp_path / "run" / "results.parquet")
    assert set(rows["precision"]) == {"fp32", "int8"} and len(set(rows["image_id"])) == 6
    assert np.isfinite(rows["sim_fp32"]).all()
