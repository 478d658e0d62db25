"""Experiment files: valid ones load; every bad input names the file / field and what was expected."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgecam.config import BenchSpec, RunConfig, apply_overrides, config_from_dict, default_config_path, load_config
from edgecam.data import DataSpec, DigitsClutterDataSpec, ImageFolderDataSpec
from edgecam.errors import ConfigError
from edgecam.specs import build_spec


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_quickstart_loads() -> None:
    cfg = load_config(default_config_path())
    assert [(m.name, m.pretrained, m.weights) for m in cfg.models] == [("efficientnet_lite0", True, None)]  # nothing trains
    assert cfg.data.name == "sample-photos" and cfg.data.mean == pytest.approx((127 / 255,) * 3) and cfg.data.std == pytest.approx((128 / 255,) * 3)
    assert cfg.export.precisions == ("fp32", "int16", "int8") and cfg.export.formats == ("onnx", "tflite") and cfg.export.quant == "ptq"
    assert [r.name for r in cfg.runtimes] == ["onnxruntime", "litert"]
    assert isinstance(cfg, RunConfig)


def test_pretrained_and_weights_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models.pretrained \(efficientnet_lite0\): set either `weights` \(a state-dict file\) or `pretrained = true`, not both"):
        load_config(write(tmp_path, '[[models]]\nname = "efficientnet_lite0"\npretrained = true\nweights = "w.pt"\n'))


def test_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(Exception):
        cfg.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[data]\nlimt = 3\n', "unknown key data.limt; allowed keys in data: boxes_dir, calib_path, calib_views, canvas, copies_test, crop, digit_size, jpeg_draft, labels_csv, limit, max_decode_pixels, mean, name, num_classes, path, resize, seed, source, std, test_fraction, train_limit, views"),
        ('bogus = 1\n', "unknown key bogus"),
        ('[bench]\niterations = "many"\n', "bench.iterations: expected int, got str 'many'"),
        ('[[models]]\nname = "resnet9000"\n', "unknown model 'resnet9000'; known models: densenet121"),
        ('[[runtimes]]\nname = "tensorflow"\n', "unknown runtime 'tensorflow'; known runtimes: fault, litert, null, onnxruntime"),
        ('[[runtimes]]\nname = "fault"\n', "runtimes.fault: set it exactly when name = 'fault'"),
        ('[[runtimes]]\nname = "onnxruntime"\ntrtexec = "trtexec"\n', "runtimes.trtexec: a tensorrt runtime option; runtime 'onnxruntime' takes none"),
        ('[[runtimes]]\nname = "tensorrt"\nmax_batch = 0\n', "runtimes.max_batch: expected an integer from 1 to 4096, got 0"),
        ('[[runtimes]]\nname = "tensorrt"\ntrtexec = " "\n', "runtimes.trtexec: expected trtexec's path"),
        ('[[runtimes]]\nname = "fault"\nfault = "meteor"\n', "runtimes.fault: expected one of segfault, kill, oom, hang, hang-child, exit, raise, nan, got 'meteor'"),
        ('[export]\nprecisions = ["fp32", "int3"]\n', "export.precisions: expected values from fp32, int16, int8, got 'int3'"),
        ('[explain]\nmethods = ["gradcampp", "magic"]\n', "unknown CAM method 'magic'"),
        ('[export]\nformats = ["coreml"]\n', "unknown export format 'coreml'; known export formats: onnx, tensorrt, tflite"),
        ('[data]\nlimit = 0\n', "data.limit: expected a positive integer"),
        ('[[models]]\nweights = "x.pt"\n', "models"),
        ('name = "x"\n[data\n', "malformed TOML"),
        ('[explain]\nsaliency = "itti"\n', "unknown saliency provider 'itti'; known saliency providers: directory, fine_grained, gt_mask, spectral_residual"),
        ('[explain]\nsaliency = "directory"\n', "explain.saliency_dir: required when explain.saliency = 'directory'"),
        ('[explain]\nemd_size = 1\n', "explain.emd_size: expected 0 (off) or an integer >= 2, got 1"),
        ('[explain]\ncc_floor = 1.5\n', "explain.cc_floor: expected a CC in (0, 1] (the decision table's fidelity floor), got 1.5"),
        ('[explain]\nshard_size = 0\n', "explain.shard_size: expected a positive integer, got 0"),
        ('[[models]]\nname = ".relative:factory"\n', "models.name: '.relative:factory' is not 'module.path:factory'"),
        ('[[models]]\nname = "a/b:factory"\n', "is not 'module.path:factory'"),
        ('[export]\nqat_lr = nan\n', "export.qat_lr: expected a finite number, got nan"),
        ('[train]\nweight_decay = -inf\n', "train.weight_decay: expected a finite number, got -inf"),
        ('[train]\nweight_decay = -0.1\n', "train.weight_decay: expected a finite number >= 0, got -0.1"),
        ('[bench]\ntimeout_s = 3e6\n', "bench.timeout_s: expected a positive number of seconds up to 604800 (7 days), got 3000000.0"),
        ('[bench]\nwarmup = 99999999999999999\n', "bench.warmup: 99999999999999999 is out of range"),
        ('[explain]\nseed = -1\n', "explain.seed: expected a seed >= 0, got -1"),
        ('[train]\nseed = -1\n', "train.seed: expected a seed >= 0, got -1"),
        ('[train]\nsaliency_guided_k = 1.5\n', "train.saliency_guided_k / saliency_guided_lambda: saliency-guided training: mask_fraction (k) must be in (0, 1), got 1.5"),
        ('[saliency_qat]\ndatasets = ["cifar10"]\n', "saliency_qat.datasets: expected values from mnist, fashion-mnist, got 'cifar10'"),
        ('[saliency_qat]\ndatasets = ["mnist"]\nguided = [true, true]\n', "saliency_qat.guided: expected [false], [true] or [false, true]"),
        ('[saliency_qat]\ndatasets = ["mnist"]\nk = 0\n', "saliency_qat.k / lam: saliency-guided training: mask_fraction (k) must be in (0, 1)"),
        ('[saliency_qat]\nclarity_images = 500\ntest_limit = 100\n', "saliency_qat.clarity_images (500) cannot exceed test_limit (100)"),
        ('[saliency_qat]\nmodel = "lenet"\n', "saliency_qat.model: unknown model 'lenet'"),
        ('[[runtimes]]\nname = "onnxruntime"\n[[runtimes]]\nname = "onnxruntime"\nthreads = 2\n', "runtimes: duplicate runtime names"),
        ('[export]\nprecisions = ["fp32", "int16"]\nopset = 17\n', "export.opset: int16 QDQ needs opset >= 21, got 17"),
        ('[explain]\nkeep_outputs = -1\n', "explain.keep_outputs: expected 0 (keep none) or a number of images, got -1"),
        ('[explain]\nkeep_cam_size = 1\n', "explain.keep_cam_size: expected at least 2 pixels a side, got 1"),
        ('[explain]\nbootstrap = 10\n', "explain.bootstrap: expected at least 100 resamples, got 10"),
        ('[[models]]\nname = "tinycnn"\nshift_copies = -1\n', "models.shift_copies (tinycnn): expected an integer >= 0, got -1"),
        ('[data]\ncopies_test = 0\n', "data.copies_test: expected a positive integer, got 0"),
        # [data]: each dataset kind validates its own fields
        ('[data]\nname = "digits-clutter"\nresize = 256\n', "data.resize: not a setting of data.name = 'digits-clutter' (its settings: canvas, copies_test, digit_size, limit, mean, name, seed, std); resize is a setting of data.name = 'image-folder'"),
        ('[data]\nname = "digits-clutter"\ncrop = 224\n', "data.crop: not a setting of data.name = 'digits-clutter'"),
        ('[data]\nname = "digits-clutter"\ntest_fraction = 0.3\n', "data.test_fraction: not a setting of data.name = 'digits-clutter'"),
        ('[data]\nname = "image-folder"\npath = "x"\ncanvas = 32\n', "data.canvas: not a setting of data.name = 'image-folder'"),
        ('[data]\ncanvas = 16\ndigit_size = 40\n', "data.digit_size: expected an integer from 8 to data.canvas (16): the digit is drawn whole on the canvas; got data.digit_size = 40 with data.canvas = 16"),
        ('[data]\nname = "coco"\n', "data.name: unknown dataset 'coco'; known datasets: digits-clutter, fashion-mnist, image-folder, mnist, sample-photos"),
        ('[data]\nname = 3\n', "data.name: expected str, got int 3"),
        ('[data]\ncrop = 300\n', "data.crop: expected at most data.resize (256) so the centre crop needs no padding, got 300 (held for data.name = 'image-folder', which --data selects)"),
        ('[data]\nresize = "big"\n', "data.resize: expected int, got str 'big'"),
        ('[data]\nother_kinds = 3\n', "data.other_kinds: expected a table of tables (kind -> settings), got 3"),
        ('[data]\nseed = -1\n', "data.seed: expected an integer >= 0, got -1"),
        ('[data]\nname = "image-folder"\n', "data.path: required for data.name = 'image-folder'"),
    ],
)
def test_bad_config_is_rejected_with_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    assert needle in str(exc.value)
    if ":" in needle:  # the field named once ("bench: bench: ..." was a defect)
        field = needle.split(":")[0]
        section = field.split(".")[0].split("[")[0]
        assert str(exc.value).count(f"{field}:") == needle.count(f"{field}:") and f"{section}: {section}" not in str(exc.value), str(exc.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


# -- [data]: one spec class per dataset kind ---------------------------------------------------------------
CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.toml"))
ST_MODELS = Path(__file__).resolve().parents[3].parent / "shared" / "models" / "st-mobilenet"
NEEDS_ST = {"cam-quant-2403.09939-real"}  # its MobileNetV2 is ST's files, referenced from ../shared/models (never copied in)


def _loadable(path: Path) -> bool:
    """A shipped config loads here: all do, except those naming the real deployed models where ../shared/models is absent."""
    return path.stem not in NEEDS_ST or ST_MODELS.is_dir()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_round_trips(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config -> to_dict -> (JSON, as the manifest stores it) -> config_from_dict gives the same config."""
    if not _loadable(path):
        pytest.skip(f"{path.name} names the real deployed models, which are not here ({ST_MODELS})")
    monkeypatch.chdir(path.parents[1])  # model files are relative to the working directory: the project root
    cfg = load_config(path)
    table = cfg.to_dict()
    assert table["data"]["name"] == cfg.data.name
    again = config_from_dict(json.loads(json.dumps(table)))
    assert again == cfg and type(again.data) is type(cfg.data) and again.to_dict() == table


def test_shipped_configs_keep_their_data_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CONFIGS[0].parents[1])
    assert {p.stem for p in CONFIGS} == {"quickstart", "digits-demo", "onnx-vs-litert", "pact-lowbit-2411.05858", "cam-quant-2403.09939", "qxai-rogers2023",
                                         "saliency-qat-2411.05858", "sensitivity-lite0", "cam-quant-2403.09939-real"}
    by_name = {p.stem: load_config(p).data for p in CONFIGS if _loadable(p)}
    assert all(type(d) is DigitsClutterDataSpec for n, d in by_name.items() if n not in ("quickstart", "saliency-qat-2411.05858", "sensitivity-lite0", "cam-quant-2403.09939-real"))
    assert (by_name["sensitivity-lite0"].views, by_name["sensitivity-lite0"].calib_views) == (8, 20)
    assert by_name["saliency-qat-2411.05858"].name == "mnist"
    assert (by_name["quickstart"].views, by_name["quickstart"].calib_views) == (4, 8)
    q = by_name["digits-demo"]
    assert (q.canvas, q.digit_size, q.limit, q.seed, q.other_kinds) == (64, 24, 200, 0, {})
    # no `name`: digits-clutter, with the image-folder settings held for --data DIR
    # (resize / crop are settings of sample-photos too, so --data sample-photos gets them as well)
    assert by_name["cam-quant-2403.09939"].other_kinds == {"image-folder": {"resize": 256, "crop": 224}, "sample-photos": {"resize": 256, "crop": 224}}
    assert by_name["qxai-rogers2023"].other_kinds == {"image-folder": {"resize": 256, "crop": 224, "boxes_dir": "boxes"}, "sample-photos": {"resize": 256, "crop": 224}}
    assert by_name["qxai-rogers2023"].limit == 1000


def test_data_override_applies_the_held_image_folder_settings(tmp_path: Path) -> None:
    cfg = load_config(next(p for p in CONFIGS if p.stem == "qxai-rogers2023"))
    run = apply_overrides(cfg, data=str(tmp_path))
    d = run.data
    assert type(d) is ImageFolderDataSpec
    assert (d.path, d.resize, d.crop, d.boxes_dir, d.limit, d.test_fraction) == (str(tmp_path), 256, 224, "boxes", 1000, 0.5)
    assert d.resolve(d.boxes_dir) == tmp_path / "boxes"
    assert type(apply_overrides(run, data="digits-clutter").data) is DigitsClutterDataSpec
    assert apply_overrides(cfg, data="digits-clutter") == cfg
    with pytest.raises(ConfigError, match=r"--data: .*nowhere is not a folder .*or a dataset name: digits-clutter, fashion-mnist, image-folder, mnist"):
        apply_overrides(cfg, data=str(tmp_path / "nowhere"))


def test_image_folder_table_builds_its_spec(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[data]\nname = "image-folder"\npath = "imgs"\nresize = 80\ncrop = 64\nmean = [0.5, 0.5, 0.5]\nstd = [1, 1, 1]\nnum_classes = 1000\n'))
    d = cfg.data
    assert type(d) is ImageFolderDataSpec
    assert (d.path, d.resize, d.crop, d.mean, d.std, d.num_classes, d.other_kinds) == ("imgs", 80, 64, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), 1000, {})


def test_build_spec_is_public_with_the_same_behaviour() -> None:
    spec = build_spec(BenchSpec, {"warmup": 2, "timeout_s": 5}, "bench")
    assert spec == BenchSpec(warmup=2, timeout_s=5.0) and isinstance(spec.timeout_s, float)
    with pytest.raises(ConfigError, match=r"unknown key bench.nope; allowed keys in bench: batch_size, iterations, memory, timeout_s, warmup"):
        build_spec(BenchSpec, {"nope": 1}, "bench")
    assert type(build_spec(DataSpec, {"name": "image-folder", "path": "p"}, "data")) is ImageFolderDataSpec


@pytest.mark.parametrize("bad", [math.inf, math.nan, -1.0, 0.0])
def test_floats_built_in_python_are_checked_as_in_toml(bad: float) -> None:
    """The Python API builds specs without TOML's finite-float check: each spec checks its own floats."""
    from edgecam.config import LowbitSpec, ModelSpec
    from edgecam.devices.inventory import DeviceSpec

    with pytest.raises(ConfigError, match="models.lr"):
        ModelSpec("tinycnn", lr=bad)
    with pytest.raises(ConfigError, match="lowbit"):
        LowbitSpec(lr=bad)
    with pytest.raises(ConfigError, match="connect_timeout_s"):
        DeviceSpec("orin", url="ssh://u@127.0.0.1", settings={"connect_timeout_s": bad})


def test_tensorrt_options_reach_the_runtime_and_leave_other_hashes_alone() -> None:
    from edgecam.config import RuntimeSpec

    spec = RuntimeSpec("tensorrt", settings={"max_batch": 8, "trtexec": "/usr/src/tensorrt/bin/trtexec"})
    assert spec.options() == {"threads": None, "max_batch": 8, "trtexec": "/usr/src/tensorrt/bin/trtexec"}
    assert RuntimeSpec("tensorrt").options() == {"threads": None}
    plain = RunConfig().to_dict()["runtimes"][0]
    assert "max_batch" not in plain and "trtexec" not in plain  # a run pinned before these options resumes


def test_runtime_settings_are_the_runtimes_own_and_keep_the_pinned_record() -> None:
    """A runtime's options are declared and validated by its class (Runtime.option_help / check_options); the
    manifest's record keeps the shape it had when they were fields of RuntimeSpec, so a pinned run's hash holds."""
    from edgecam.config import RuntimeSpec
    from edgecam.exporters.base import PRECISIONS
    from edgecam.runtimes.fault import PRECISIONS as FAULT_PRECISIONS

    assert FAULT_PRECISIONS == PRECISIONS  # the device side's copy
    cfg = config_from_dict({"runtimes": [{"name": "fault", "fault": "nan", "fault_precisions": ["int8"]}, {"name": "onnxruntime", "threads": 2}]})
    assert cfg.runtimes[0].options() == {"threads": None, "fault": "nan", "fault_precisions": ["int8"]}
    assert cfg.to_dict()["runtimes"] == [{"name": "fault", "threads": None, "providers": None, "fault": "nan", "fault_precisions": ["int8"]},
                                         {"name": "onnxruntime", "threads": 2, "providers": None, "fault": None, "fault_precisions": []}]
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # a pinned run's record reads back as the same config
    with pytest.raises(ConfigError, match=r"runtimes.max_batch: a tensorrt runtime option; runtime 'fault' takes fault, fault_precisions"):
        config_from_dict({"runtimes": [{"name": "fault", "fault": "nan", "max_batch": 4}]})
    with pytest.raises(ConfigError, match=r"unknown key runtimes\[0\].batch; allowed keys in runtimes\[0\]: fault, fault_precisions, max_batch, name, providers, threads, trtexec"):
        config_from_dict({"runtimes": [{"name": "onnxruntime", "batch": 4}]})
