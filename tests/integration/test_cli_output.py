"""What `edgecam run` prints when its output is a log (a subprocess, not a terminal: the worst case): at most
40 lines per experiment (stdout and stderr together), the decision table and its picks, where the report is,
edgecam's own warnings, and none of the libraries' own log lines (absl, TensorFlow's oneDNN notice, torch's
`_pytree` warning) unless --verbose. `--tables` adds Table 1's layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

MAX_LINES = 40
#: the libraries' own lines: glog / absl prefixes ("I0000 00:00:...", "W1206 20:20:13..."), absl's and oneDNN's notices, torch's _pytree
NOISE = re.compile(r"^[IWEF]\d{4} |absl::|oneDNN|torch/utils/", re.MULTILINE)
TABLE1_TITLES = ("CAM fidelity:", "Faithfulness, localisation, activations:", "Runtime gap:", "Accuracy, latency and memory")
PICKS = ("fastest with CC vs fp32 (gradcampp) >= 0.9: ", "smallest with CC vs fp32 (gradcampp) >= 0.9: ", "most faithful quantized (gradcampp): ")

#: ONNX Runtime and LiteRT at fp32 and int8 (PTQ: no fine-tuning) of tinycnn given by a weights file: its
#: artifacts are exported in the CLI's own process (the weights' hash is new to the cache), so `litert_torch`
#: is imported there and its native log lines would reach the output
CONFIG = """
name = "cli-output"
[export]
formats = ["onnx", "tflite"]
precisions = ["fp32", "int8"]
quant = "ptq"
[[models]]
name = "tinycnn"
weights = "{weights}"
[[runtimes]]
name = "onnxruntime"
threads = 1
[[runtimes]]
name = "litert"
threads = 1
[bench]
warmup = 1
iterations = 5
memory = false
[explain]
methods = ["gradcampp", "eigencam"]
faithfulness_images = 2
bootstrap = 200
"""


def _edgecam(args: list[str], cache: Path, timeout: float = 600) -> tuple[int, str, float]:
    """`edgecam ARGS` in a fresh process, stdout and stderr into one pipe (not a terminal): (status, output, seconds)."""
    env = {**os.environ, "EDGECAM_CACHE_DIR": str(cache), "COLUMNS": "150"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecam.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout)
    return proc.returncode, proc.stdout, time.perf_counter() - t0


def _check_default_output(rc: int, text: str, out: Path, model: str, images: int) -> None:
    """The default output: short, quiet, the decision table, its picks, edgecam's own warning and the report."""
    lines = text.splitlines()
    assert rc == 0, text[-4000:]
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n{text}"
    assert not NOISE.search(text), NOISE.search(text).group(0) + "\n" + text  # type: ignore[union-attr]
    assert f"{model}: which variant to ship" in text and "CC gradcampp [95% CI]" in text and "Pareto" in text
    for pick in PICKS:
        assert sum(line.startswith(pick) for line in lines) == 1, (pick, text)
    assert f"using {images} of " in text  # edgecam's own warning (the --limit that leaves images out) is kept
    report = next(line for line in lines if line.startswith("report: "))
    assert Path(report[len("report: "):]).is_file() and report == f"report: {out / 'report.html'}"
    assert not any(title in text for title in TABLE1_TITLES)  # Table 1's layout: --tables
    assert "work estimate for the explain stage" not in text  # one line by default (per variant: --verbose)


@pytest.fixture(scope="module")
def weights_config(trained_tinycnn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    root = tmp_path_factory.mktemp("cli-output")
    weights = root / "tinycnn.pt"
    torch.save(trained_tinycnn.model.state_dict(), weights)
    cfg = root / "cli-output.toml"
    cfg.write_text(CONFIG.format(weights=weights))
    return cfg


def test_the_default_output_is_short_quiet_and_answers(weights_config: Path, session_cache: Path, tmp_path: Path) -> None:
    """ONNX Runtime and LiteRT int8 exported in the run's own process (the absl / oneDNN / torch lines would be
    printed there): none of them reach the output, which stays under 40 lines."""
    out = tmp_path / "run"
    rc, text, seconds = _edgecam(["run", str(weights_config), "--out", str(out), "--limit", "4"], session_cache)
    _check_default_output(rc, text, out, "tinycnn", 4)
    assert "litert int8" in text and "onnxruntime int8" in text
    assert "CAMs tinycnn: done, 4 images in " in text  # a plain progress line, no bar
    assert seconds < 300


def test_tables_and_verbose_print_table1_and_the_estimate_per_variant(weights_config: Path, session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc, text, _ = _edgecam(["run", str(weights_config), "--out", str(out), "--limit", "4", "--tables", "--verbose"], session_cache)
    assert rc == 0, text[-4000:]
    for title in TABLE1_TITLES:
        assert title in text, title
    assert "int8 v. fp32" in text and "work estimate for the explain stage" in text and "tinycnn-tflite-int8-litert:" in text
    assert "tinycnn: which variant to ship" in text and all(p in text for p in PICKS)  # the decision table too
    assert "using 4 of " in text and (out / "report.html").is_file()


@pytest.mark.slow  # 38 s on an idle 2-core machine, 89 s on a busy one (its QAT and TFLite exports); `make test-slow` runs it, the trimmed
# digits config above checks the same output in `make test`
def test_the_digits_demo_prints_at_most_40_lines(trained_tinycnn, session_cache: Path, tmp_path: Path) -> None:
    """`make run`'s second experiment (its tinycnn checkpoint is the session's: nothing trains here)."""
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    rc, text, _ = _edgecam(["run", str(repo / "configs" / "digits-demo.toml"), "--out", str(out), "--limit", "4"], session_cache)
    _check_default_output(rc, text, out, "tinycnn", 4)
    assert "fp32 accuracy tinycnn (cached checkpoint)" in (out / "manifest.json").read_text()  # nothing trained: not a "train" step


@pytest.mark.slow  # 75 s with an empty cache on 2 cores (six EfficientNet-Lite0 exports); `make test-slow` runs it
def test_the_quickstart_prints_at_most_40_lines(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    rc, text, _ = _edgecam(["run", "--out", str(out), "--limit", "4"], session_cache)
    _check_default_output(rc, text, out, "efficientnet_lite0", 4)
    assert "train " not in text and "fp32 accuracy efficientnet_lite0 (pretrained)" in (out / "manifest.json").read_text()
