"""The `[data]` spec: one frozen, validated dataclass per dataset kind, picked by `data.name`.

`DataSpec` holds what every kind shares (name, seed, limit, mean, std); each kind subclasses it with only
its own fields and registers `DatasetKind(spec, load)` in `DATASETS`. `DataSpec(name=..., **fields)`
returns the spec of that kind (`DataSpec()` is digits-clutter's), and a field the kind does not have is a
`ConfigError` naming it and the kind's settings.

A `[data]` table WITHOUT `name` is digits-clutter's, but may also hold settings of other kinds for the
CLI's `--data` to pick (`--data DIR` makes it an image folder): those are validated at load time and kept
in `other_kinds` (kind -> settings), which `to_dict()` records and `switch_kind` applies.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from edgecam.errors import ConfigError
from edgecam.registry import Registry

if TYPE_CHECKING:
    from edgecam.data.datasets import Datasets

__all__ = ["DEFAULT_KIND", "DATASETS", "DataSpec", "DatasetKind", "load_data", "switch_kind"]

DEFAULT_KIND = "digits-clutter"  # the kind of a [data] table without `name`


@dataclass(frozen=True)
class DatasetKind:
    """A registry entry: the kind's spec class (its `[data]` fields) and the loader spec -> `Datasets`."""

    spec: type["DataSpec"]
    load: Callable[[Any], "Datasets"]


DATASETS: Registry[DatasetKind] = Registry("dataset")


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _kind_of(name: Any, key: str) -> DatasetKind:
    """The registry entry of `name`; errors name `key` (the field that holds it)."""
    if not isinstance(name, str):
        raise ConfigError(f"{key}: expected str, got {type(name).__name__} {name!r}")
    try:
        return DATASETS.get(name)
    except KeyError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _check_keys(kind: str, keys: Any, where: str, own: Optional[set[str]] = None) -> None:
    """Every key must be one of `own` (default: the fields of `kind`); a key of another kind says whose it is."""
    own = set(_field_names(DATASETS.get(kind).spec)) if own is None else own
    for key in sorted(set(keys) - own):
        owners = [k for k in DATASETS if key in _field_names(DATASETS.get(k).spec)]
        hint = f"; {key} is a setting of data.name = {' / '.join(repr(o) for o in owners)}" if owners else ""
        raise ConfigError(f"{where}{key}: not a setting of data.name = {kind!r} (its settings: {', '.join(sorted(own - {'other_kinds'}))}){hint}")


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, and how many test images to benchmark and explain (the fields every kind has).

    name: the dataset kind (`DATASETS`); seed: the kind's generator / split seed; limit: test images per
    variant that get CAMs and their metrics (None, the default: the whole test split; a run that cuts the split
    says so in its log and manifest, `edgecam.bench.sweep.image_limit`); mean / std: per-channel normalisation (None: the kind's default);
    other_kinds: settings of other kinds from a `[data]` table without `name`, kept for `--data`."""

    KIND: ClassVar[str] = ""  # set by each kind's subclass
    RUN_TIME_STAND_INS: ClassVar[dict[str, Any]] = {}  # fields --data sets: stand-ins to validate held settings

    name: str = DEFAULT_KIND
    seed: int = 0
    limit: Optional[int] = None  # unset: every test image (TOML cannot write None: a limit is set explicitly)
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    other_kinds: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def __new__(cls, *args: Any, **kwargs: Any) -> "DataSpec":
        """`DataSpec(name=kind, ...)` builds that kind's spec class; subclasses construct as usual."""
        if cls is DataSpec:
            name = args[0] if args else kwargs.get("name", DEFAULT_KIND)
            cls = _kind_of(name, "data.name").spec
            _check_keys(name, kwargs, "data.")
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if self.name != self.KIND:
            raise ConfigError(f"data.name: {type(self).__name__} is the spec of {self.KIND!r}, got {self.name!r}; DataSpec(name=...) picks the class")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit: expected a positive integer or nothing, got {self.limit}")
        if self.seed < 0:
            raise ConfigError(f"data.seed: expected an integer >= 0, got {self.seed}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != 3 or not all(math.isfinite(x) for x in v) or (name == "std" and min(v) <= 0):
                raise ConfigError(f"data.{name}: expected three finite numbers (one per RGB channel){', all > 0' if name == 'std' else ''}, got {list(v)}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        shared = set(_field_names(DataSpec))
        for kind, settings in self.other_kinds.items():
            other = _kind_of(kind, "data.other_kinds").spec
            if kind == self.name or not isinstance(settings, dict):
                raise ConfigError(f"data.other_kinds.{kind}: expected a table of settings of a kind other than data.name = {self.name!r}")
            for key in sorted(shared & set(settings)):
                raise ConfigError(f"data.other_kinds.{kind}.{key}: every kind has {key}: set data.{key} instead")
            _check_keys(kind, settings, f"data.other_kinds.{kind}.", set(_field_names(other)) - shared)
        object.__setattr__(self, "other_kinds", {k: dict(v) for k, v in self.other_kinds.items()})

    @classmethod
    def spec_for_table(cls, table: dict[str, Any], path: str, build: Callable[[type, dict[str, Any], str], Any]) -> tuple[type, dict[str, Any]]:
        """The hook `config.build_spec` calls: the kind class a `[data]` table builds, and the table for it.

        With `name`, every key must be the kind's; without, keys of other kinds go to `other_kinds`, each
        kind's held settings validated by building that kind's spec (`build`) with `RUN_TIME_STAND_INS`."""
        where = f"{path}." if path else ""
        kind = table.get("name", cls.KIND or DEFAULT_KIND)
        spec_cls = _kind_of(kind, f"{where}name").spec
        if cls is not DataSpec and spec_cls is not cls:
            raise ConfigError(f"{where}name: expected {cls.KIND!r} here, got {kind!r}")
        if "name" in table:
            _check_keys(kind, table, where)
        everyone = set().union(*(_field_names(DATASETS.get(k).spec) for k in DATASETS))
        unknown = sorted(set(table) - everyone)
        if unknown:  # only without `name`: any kind's setting is allowed
            raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}; "
                              f"allowed keys in {path or 'data'}: {', '.join(sorted(everyone - {'other_kinds'}))}")
        held = table.get("other_kinds", {})
        if not isinstance(held, dict) or not all(isinstance(v, dict) for v in held.values()):
            raise ConfigError(f"{where}other_kinds: expected a table of tables (kind -> settings), got {held!r}")
        held = {k: dict(v) for k, v in held.items()}
        own = set(_field_names(spec_cls))
        for key in sorted(set(table) - own):  # only without `name`: settings of other kinds, for --data
            for other in DATASETS:
                if key in _field_names(DATASETS.get(other).spec):
                    held.setdefault(other, {})[key] = table[key]
        for other, settings in held.items():
            other_cls = _kind_of(other, f"{where}other_kinds").spec
            try:
                built = build(other_cls, {**other_cls.RUN_TIME_STAND_INS, **settings, "name": other}, path)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (held for data.name = {other!r}, which --data selects)") from exc
            held[other] = {k: getattr(built, k) for k in settings}
        out = {k: v for k, v in table.items() if k in own and k != "other_kinds"}
        if held:
            out["other_kinds"] = held
        return spec_cls, out


def switch_kind(spec: DataSpec, kind: str, **changes: Any) -> DataSpec:
    """`spec` as a spec of `kind` (the CLI's `--data`): the shared fields carry over, with the settings held
    for `kind` in `other_kinds` and `changes` on top; the old kind's own settings are dropped."""
    if kind == spec.name:
        return dataclasses.replace(spec, **changes)
    shared = {k: getattr(spec, k) for k in _field_names(DataSpec) if k not in ("name", "other_kinds")}
    held = {k: v for k, v in spec.other_kinds.items() if k != kind}
    return DataSpec(name=kind, **{**shared, **spec.other_kinds.get(kind, {}), **changes}, other_kinds=held)


def load_data(spec: DataSpec) -> "Datasets":
    """The dataset `spec` describes, by its kind's loader. Bad folders, CSVs, box files and image files whose
    header does not decode (or that decode to more than the pixel cap) fail here, before any work, naming
    the file; pixels are decoded later, shard by shard."""
    return DATASETS.get(spec.name).load(spec)
