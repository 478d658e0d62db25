"""The saliency-QAT study's checks before any work, and its table helpers (the study itself runs in
tests/integration/test_saliency_qat.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from paper_datasets import ensure_mnist_5k

from edgecam.bench.studies.saliency_qat import check, map_entropy_bits
from edgecam.config import SaliencyQatSpec
from edgecam.errors import ConfigError


def test_missing_files_and_an_unfit_model_are_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_mnist_5k()
    with pytest.raises(ConfigError, match="absent.*not found"):
        check(SaliencyQatSpec(datasets=("fashion-mnist",), fashion_mnist_source=str(tmp_path / "absent")))
    with pytest.raises(ConfigError, match="data.source: .*nope.csv.gz is not a file"):
        check(SaliencyQatSpec(datasets=("mnist",), mnist_source=str(tmp_path / "nope.csv.gz")))
    with pytest.raises(ConfigError, match="saliency_qat.model = 'tinycnn' does not take the data's 1 x 28 x 28 grayscale images"):
        check(SaliencyQatSpec(datasets=("mnist",), model="tinycnn"))  # 3-channel input
    from edgecam.cli import main

    cfg = tmp_path / "x.toml"
    cfg.write_text(f'[data]\nlimit = 10\n[saliency_qat]\ndatasets = ["fashion-mnist"]\nfashion_mnist_source = "{tmp_path / "absent"}"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_map_entropy_is_in_bits_of_the_map_as_a_distribution() -> None:
    assert map_entropy_bits(np.ones((4, 4))) == pytest.approx(4.0)  # 16 equal pixels: log2 16
    one = np.zeros((4, 4))
    one[1, 2] = 3.0
    assert map_entropy_bits(one) == pytest.approx(0.0)
    two = np.zeros((4, 4))
    two[0, 0] = two[3, 3] = 1.0
    assert map_entropy_bits(two) == pytest.approx(1.0)


def test_a_run_config_without_the_study_keeps_its_old_hash() -> None:
    """Options added after a run directory was pinned, left off, do not change the config hash (the run resumes)."""
    from edgecam.config import RunConfig

    d = RunConfig().to_dict()
    assert "saliency_qat" not in d and "saliency_guided_k" not in d["train"]
    assert "saliency_qat" in RunConfig(saliency_qat=SaliencyQatSpec(datasets=("mnist",))).to_dict()
