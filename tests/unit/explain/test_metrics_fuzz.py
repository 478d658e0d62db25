"""Fuzzing every per-image metric (hypothesis) with what a device can send back: random shapes (1-D, 3-D,
1-pixel, mismatched), dtypes (float16/32/64, ints, uint8, bool), NaN / +-Inf, constant and all-zero maps.
Each call returns a float (NaN where undefined) in its documented range, or raises ValueError saying what
is wrong: never another exception, never a warning-as-crash."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgecam.explain.activations import activation_stats, gini, hoyer
from edgecam.explain.localisation import boxes_from_cam, energy_pointing_game, localisation_row
from edgecam.explain.metrics import cc, compare, emd, kld, nss, rmse, sim

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int32, np.uint8, np.bool_])
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e30])


@st.composite
def maps(draw: st.DrawFn, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A map of a random dtype and shape (mostly 2-D), constant / zero / with NaN or Inf holes."""
    if shape is None:
        shape = draw(st.one_of(st.tuples(st.integers(1, 9), st.integers(1, 9)), st.tuples(st.integers(1, 5)), st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))))
    dtype = draw(DTYPES)
    kind = draw(st.sampled_from(["random", "constant", "zero", "holes"]))
    if kind == "constant":
        with np.errstate(over="ignore"):  # 1e30 as float16 is +inf: wanted
            return np.full(shape, draw(SPECIAL), dtype=np.float64).astype(dtype) if np.issubdtype(dtype, np.floating) else np.full(shape, 3, dtype=dtype)
    if kind == "zero":
        return np.zeros(shape, dtype=dtype)
    elements = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=16 if dtype == np.float16 else 64) if np.issubdtype(dtype, np.floating) else None
    m = draw(arrays(dtype, shape, elements=elements)) if elements is not None else draw(arrays(dtype, shape))
    if kind == "holes" and np.issubdtype(dtype, np.floating) and m.size:
        flat = m.reshape(-1).copy()
        for i in draw(st.lists(st.integers(0, m.size - 1), min_size=1, max_size=3)):
            with np.errstate(over="ignore"):
                flat[i] = draw(SPECIAL)
        m = flat.reshape(shape)
    return m


@st.composite
def pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    a = draw(maps())
    b = draw(maps(a.shape)) if draw(st.integers(0, 4)) else draw(maps())  # mostly the same shape
    return a, b


RANGES: dict[str, tuple[float, float]] = {"sim": (0.0, 1.0 + 1e-9), "cc": (-1.0 - 1e-9, 1.0 + 1e-9), "kld": (-1e-9, math.inf), "rmse": (0.0, 1.0 + 1e-9),
                                          "emd": (0.0, math.inf), "nss": (-math.inf, math.inf), "pointing": (0.0, 1.0 + 1e-9)}


def _call(name: str, fn: Callable[[], Any]) -> Any:
    """Run a metric with warnings as errors: a float (or dict of them) back, or a ValueError with a message."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return fn()
        except ValueError as exc:
            assert str(exc).strip(), f"{name}: ValueError without a message"
            return None


def _check(name: str, value: Any) -> None:
    if value is None:
        return
    assert isinstance(value, float), f"{name} returned {type(value).__name__}"
    lo, hi = RANGES[name]
    assert math.isnan(value) or lo <= value <= hi, f"{name} = {value} outside [{lo}, {hi}]"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_pair_metrics_return_a_float_in_range_or_a_value_error(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    a0, b0 = a.copy(), b.copy()
    for name, fn in (("sim", sim), ("cc", cc), ("kld", kld), ("rmse", rmse)):
        _check(name, _call(name, lambda: fn(a, b)))
    _check("emd", _call("emd", lambda: emd(a, b, size=3)))
    _check("nss", _call("nss", lambda: nss(a, b.astype(bool) if b.dtype != np.bool_ else b)))
    out = _call("compare", lambda: compare(a, b))
    if out is not None:
        for k in ("sim", "cc", "kld", "rmse"):
            _check(k, out[k])
    np.testing.assert_array_equal(a, a0)  # metrics never modify the maps they are given
    np.testing.assert_array_equal(b, b0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs())
def test_localisation_returns_boxes_or_nan_never_crashes(pair: tuple[np.ndarray, np.ndarray]) -> None:
    cam, mask = pair
    _check("pointing", _call("pointing", lambda: energy_pointing_game(cam, mask)))
    row = _call("localisation_row", lambda: localisation_row(cam, mask))
    if row is not None:
        assert math.isnan(row["wsol_iou"]) or 0.0 <= row["wsol_iou"] <= 1.0
        _check("pointing", row["pointing_energy"])
    boxes = _call("boxes", lambda: boxes_from_cam(cam, [0.2, 0.5]))
    if boxes is not None:
        assert len(boxes) == 2
        for box in boxes:
            assert box is None or (0 <= box[0] <= box[2] < cam.shape[1] and 0 <= box[1] <= box[3] < cam.shape[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps())
def test_activation_statistics_return_floats_or_nan(features: np.ndarray) -> None:
    stats = _call("activation_stats", lambda: activation_stats(features))
    if stats is not None:
        assert all(isinstance(v, float) for v in stats.values())
        for k in ("hoyer", "gini"):
            assert math.isnan(stats[k]) or -1e-9 <= stats[k] <= 1 + 1e-9, (k, stats[k])
    for fn in (hoyer, gini):
        value = _call(fn.__name__, lambda: fn(features))
        assert value is None or math.isnan(value) or -1e-9 <= value <= 1 + 1e-9
