"""A TOML table -> a frozen, validated dataclass spec (`build_spec`), with the field's path in every error:
the ground floor that the run config (`config.py`) and the device inventory (`devices/inventory.py`) both
build their specs with, so that the inventory need not import the run config."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

from edgecam.errors import ConfigError, EdgecamError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0]
        return tuple(_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {type(value).__name__}")
        return build_spec(tp, value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):  # TOML spells nan and inf
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    if tp is int and isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        raise ConfigError(f"{path}: {value} is out of range (at most 2**53 in magnitude)")
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def build_spec(cls: Any, table: dict[str, Any], path: str) -> Any:
    """The TOML table `table` as the frozen dataclass `cls`: unknown keys, missing required keys, wrong types
    and the spec's own validation all raise `ConfigError` naming the field as `path.key`.

    A class with a `spec_for_table(table, path, build_spec)` classmethod (`DataSpec`: one class per dataset
    kind) first picks the class the table builds, and the table for it."""
    pick = getattr(cls, "spec_for_table", None)
    if pick is not None:
        cls, table = pick(table, path, build_spec)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - fields)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}; allowed keys{' in ' + path if path else ''}: {', '.join(sorted(fields))}")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in table]
    if missing:
        raise ConfigError(f"{path or 'config'}: missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in table.items()}
    try:
        return cls(**kwargs)
    except EdgecamError as exc:  # ConfigError, or an unknown registry name
        where, text = path or "config", str(exc)
        named = text.startswith((f"{where}:", f"{where}.", f"{where.split('[')[0]}:", f"{where.split('[')[0]}."))
        raise ConfigError(text if named else f"{where}: {text}") from exc  # the field's own message already names it: once
    except TypeError as exc:  # missing required fields
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def fold_settings(table: dict[str, Any], path: str, common: set[str], declared: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A `[[runtimes]]`, `[[devices]]` or `[explain]` table whose keys beyond the spec's own (`common`) are the
    settings that the registered parts (runtimes, transports, CAM methods) declare (`declared`: part -> {setting: what it does}), with those moved into the table's
    `settings`. A setting given as None or [] is unset (the form a pinned run's record writes). A key that no
    part declares is an unknown key, and the error lists every allowed key."""
    owned = set().union(*declared.values())
    unknown = sorted(set(table) - common - owned)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}; "
                          f"allowed keys{' in ' + path if path else ''}: {', '.join(sorted(common | owned))}")
    return {**{k: v for k, v in table.items() if k in common}, "settings": {k: v for k, v in table.items() if k in owned and v is not None and v != []}}


def refuse_foreign_settings(given: dict[str, Any], where: str, kind: str, name: str, declared: dict[str, dict[str, str]]) -> None:
    """Refuse a setting that part `name` does not declare, naming the parts whose it is: "runtimes.trtexec: a
    tensorrt runtime option; runtime 'onnxruntime' takes none"."""
    mine = declared[name]
    for key in sorted(set(given) - set(mine)):
        owners = [n for n, helps in declared.items() if key in helps]
        whose = f"a {' / '.join(owners)} {kind} option" if owners else f"not a {kind} option"
        raise ConfigError(f"{where}.{key}: {whose}; {kind} {name!r} takes {', '.join(mine) or 'none'}")


def frozen_settings(settings: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Settings as sorted (key, value) pairs, lists as tuples: a value a frozen spec can hold."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in settings.items()))


def require_positive(spec: Any, where: str, names: tuple[str, ...]) -> None:
    """Each of `spec`'s fields `names` that is set must be an integer >= 1: "where.name: expected a positive
    integer, got 0" (the one check every section's counts share)."""
    for name in names:
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise ConfigError(f"{where}.{name}: expected a positive integer, got {value}")
