"""Fuzzing the experiment loader (hypothesis): random tables shaped like the schema (right and wrong keys,
every TOML value type, edge numbers) and random bytes as a file must give a RunConfig or a ConfigError that
names a field or the file: never another exception, never an empty message."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecam.config import RunConfig, config_from_dict, load_config
from edgecam.data import DATASETS, DataSpec
from edgecam.errors import ConfigError

SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
HINTS = typing.get_type_hints(RunConfig)


scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(["tinycnn", "onnx", "tflite", "fp32", "int8", "int16", "onnxruntime", "litert", "null", "fault", "segfault",
                     "gradcampp", "scorecam", "eigencam", "directory", "label", "pred", "qat", "ptq", "local", "digits-clutter", "image-folder", "a:b"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)


NAMES = st.sampled_from(["tinycnn", "mobilenet_v2", "onnx", "tflite", "fp32", "int8", "int16", "onnxruntime", "litert", "null", "fault", "segfault",
                         "nan", "gradcampp", "scorecam", "eigencam", "rise", "directory", "spectral_residual", "label", "pred", "qat", "ptq",
                         "local", "digits-clutter", "image-folder", "auto", "a:b", ""])
EDGE_INTS = st.one_of(st.sampled_from([0, 1, -1, 2, 3, 10**9]), st.integers(-3, 300))
EDGE_FLOATS = st.one_of(st.sampled_from([0.0, -1.0, 1e-300, 1e300]), st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False), st.floats(0.0, 2.0, allow_subnormal=False))


def _typed(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a field's own type (edge numbers, real and wrong names), to get past the type checks into
    each spec's own validation."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin is tuple:
        return st.lists(_typed(args[0]), max_size=3)
    if args and origin is not tuple:
        return _typed(args[0])  # Optional[X]
    return {int: EDGE_INTS, float: EDGE_FLOATS, bool: st.booleans(), str: NAMES}.get(tp, values)


def _section(section: str) -> tuple[type, dict[str, Any]]:
    """The section's dataclass and its fields' types; for [data], the fields of every dataset kind."""
    tp = HINTS[section]
    args = typing.get_args(tp)
    cls = args[0] if args else tp
    if cls is DataSpec:
        return cls, {k: v for name in DATASETS for k, v in typing.get_type_hints(DATASETS.get(name).spec).items() if not k.isupper()}
    return cls, typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}


@st.composite
def tables(draw: st.DrawFn) -> dict[str, Any]:
    """A config table: mostly known sections and keys with values of their own type (so that each spec's
    validation runs), sometimes unknown keys or values of any TOML type."""
    table: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)), max_size=5, unique=True)):
        cls, hints = _section(section)
        if not hints:
            table[section] = draw(st.one_of(_typed(HINTS[section]), values) if draw(st.integers(0, 9)) else values)
            continue
        def entry() -> dict[str, Any]:
            keys = draw(st.lists(st.sampled_from(list(hints)), max_size=4, unique=True))
            body = {k: draw(_typed(hints[k])) if draw(st.integers(0, 9)) else draw(values) for k in keys}
            if not draw(st.integers(0, 19)):
                body["nope"] = 1
            return body
        table[section] = [entry() for _ in range(draw(st.integers(0, 3)))] if section in ("models", "runtimes") else entry()
    return table


def _ok_or_clear(fn: Any) -> None:
    try:
        cfg = fn()
    except ConfigError as exc:
        assert str(exc).strip(), "a ConfigError must say what is wrong"
        return
    assert isinstance(cfg, RunConfig)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_random_tables_give_a_config_or_a_config_error(table: dict[str, Any]) -> None:
    _ok_or_clear(lambda: config_from_dict(table))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["bench", "explain", "data", "train", "export"]), st.data())
def test_numeric_edges_of_every_field_are_validated(section: str, data: st.DataObject) -> None:
    """Valid-typed but extreme numbers (0, negatives, NaN, inf, huge) in a real field: accepted or a clear error."""
    keys = [k for k in _section(section)[1] if k != "name"]
    key = data.draw(st.sampled_from(keys))
    value = data.draw(st.one_of(st.sampled_from([0, -1, 2**62, 0.0, -0.5, math.nan, math.inf, -math.inf, 1e-300]), st.integers(-5, 5)))
    _ok_or_clear(lambda: config_from_dict({section: {key: value}}))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_file_contents_give_a_config_or_a_config_error_naming_the_file(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(blob)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
