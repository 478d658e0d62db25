"""Saliency metrics (SIM, CC, KLD) checked against values computed by hand on tiny maps."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgecam.explain import metrics
from edgecam.explain.metrics import (
    EPS,
    cc,
    compare,
    emd,
    is_constant,
    kld,
    normalize_map,
    nss,
    rmse,
    sim,
    summarize,
    to_distribution,
)

# ---------------------------------------------------------------------------------------------
# Example A (2x2), already in [0, 1] so min-max normalisation leaves it unchanged:
#   pred = [[0, 1], [1, 0]] -> flat [0, 1, 1, 0], sum 2 -> P = [0, .5, .5, 0]
#   ref  = [[0, 1], [0, 0]] -> flat [0, 1, 0, 0], sum 1 -> Q = [0, 1, 0, 0]
# SIM = min(0,0) + min(.5,1) + min(.5,0) + min(0,0) = 0.5
# CC:  a = p - .5 = [-.5, .5, .5, -.5],  sum a^2 = 1
#      b = q - .25 = [-.25, .75, -.25, -.25], sum b^2 = 3 * .0625 + .5625 = .75
#      sum ab = .125 + .375 - .125 + .125 = .5  ->  CC = .5 / sqrt(1 * .75) = 1/sqrt(3)
# KLD(pred, ref): only Q_2 = 1 is non-zero -> 1 * log(EPS + 1 / (.5 + EPS)) = log 2
# KLD(ref, pred) (P = [0,1,0,0], Q = [0,.5,.5,0]):
#      .5 * log(EPS + .5 / (1 + EPS)) + .5 * log(EPS + .5 / (0 + EPS)) = .5 log .5 + .5 log(.5/EPS)
# ---------------------------------------------------------------------------------------------
A_PRED = np.array([[0.0, 1.0], [1.0, 0.0]])
A_REF = np.array([[0.0, 1.0], [0.0, 0.0]])

# ---------------------------------------------------------------------------------------------
# Example B (2x3):
#   pred = [[1, 2, 3], [4, 5, 6]] -> (x - 1) / 5 = [0, .2, .4, .6, .8, 1], sum 3
#        -> P = [0, 1, 2, 3, 4, 5] / 15
#   ref  = [[0, 0, 1], [0, 0, 1]] -> Q = [0, 0, .5, 0, 0, .5]
# SIM = min(2/15, .5) + min(5/15, .5) = 7/15
# CC:  a = [-.5, -.3, -.1, .1, .3, .5], sum a^2 = .7, sum a = 0
#      q mean 1/3, b = [-1/3, -1/3, 2/3, -1/3, -1/3, 2/3], sum b^2 = 4/9 + 8/9 = 4/3
#      sum ab = sum a*q = a_3 + a_6 = -.1 + .5 = .4  ->  CC = .4 / sqrt(.7 * 4/3)
# KLD(pred, ref) = .5 log(.5 / (2/15)) + .5 log(.5 / (5/15)) = .5 log 3.75 + .5 log 1.5
#               = .5 log 5.625
# ---------------------------------------------------------------------------------------------
B_PRED = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
B_REF = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])

CONST = np.full((2, 2), 2.0)


def test_eps_value() -> None:
    assert EPS == 2.2204e-16


# --- normalize_map / is_constant / to_distribution ---------------------------------------------


def test_normalize_map_min_max() -> None:
    out = normalize_map(B_PRED)
    np.testing.assert_allclose(out, [[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], rtol=0, atol=1e-15)
    assert out.min() == 0.0 and out.max() == 1.0


def test_normalize_map_constant_and_all_nonfinite_give_zeros() -> None:
    np.testing.assert_array_equal(normalize_map(CONST), np.zeros((2, 2)))
    all_bad = np.array([[np.nan, np.inf], [-np.inf, np.nan]])
    np.testing.assert_array_equal(normalize_map(all_bad), np.zeros((2, 2)))


def test_normalize_map_partial_nan_uses_finite_range() -> None:
    m = np.array([[0.0, np.nan], [2.0, 4.0]])
    out = normalize_map(m)
    assert np.isnan(out[0, 1])
    np.testing.assert_allclose(out[[0, 1, 1], [0, 0, 1]], [0.0, 0.5, 1.0])


def test_normalize_map_huge_range_does_not_overflow() -> None:
    m = np.array([[-1e308, 0.0], [1e308, 1e308]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = normalize_map(m)
    np.testing.assert_allclose(out, [[0.0, 0.5], [1.0, 1.0]])


@pytest.mark.parametrize("bad", [np.zeros(4), np.zeros((2, 2, 2)), np.float64(3.0), np.zeros((0, 3))])
def test_normalize_map_rejects_non_2d_or_empty(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D|empty"):
        normalize_map(bad)


def test_normalize_map_returns_new_array() -> None:
    m = np.array([[0.0, 1.0], [0.5, 0.25]])  # already in [0, 1]
    keep = m.copy()
    out = normalize_map(m)
    out[...] = 99.0
    np.testing.assert_array_equal(m, keep)


def test_is_constant() -> None:
    assert is_constant(CONST)
    assert is_constant(np.array([[np.nan, 3.0], [3.0, np.inf]]))  # finite entries all equal
    assert not is_constant(A_REF)
    assert not is_constant(np.array([[0.0, 1e-300], [0.0, 0.0]]))


def test_to_distribution_values() -> None:
    np.testing.assert_allclose(to_distribution(B_PRED), np.arange(6).reshape(2, 3) / 15.0, atol=1e-15)
    d = to_distribution(A_PRED)
    np.testing.assert_allclose(d, [[0.0, 0.5], [0.5, 0.0]])
    assert math.isclose(float(d.sum()), 1.0)


def test_to_distribution_constant_is_uniform() -> None:
    np.testing.assert_array_equal(to_distribution(CONST), np.full((2, 2), 0.25))
    np.testing.assert_array_equal(to_distribution(np.zeros((2, 3))), np.full((2, 3), 1.0 / 6.0))


# --- hand-computed metric values --------------------------------------------------------------


def test_example_a_hand_values() -> None:
    assert sim(A_PRED, A_REF) == pytest.approx(0.5, abs=1e-12)
    assert cc(A_PRED, A_REF) == pytest.approx(1.0 / math.sqrt(3.0), abs=1e-12)
    assert kld(A_PRED, A_REF) == pytest.approx(math.log(2.0), abs=1e-12)


def test_example_a_kld_is_asymmetric() -> None:
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / EPS)  # ~17.33, see header comment
    assert kld(A_REF, A_PRED) == pytest.approx(expected, rel=1e-9)
    assert kld(A_REF, A_PRED) > 20 * kld(A_PRED, A_REF)


def test_example_b_hand_values() -> None:
    assert sim(B_PRED, B_REF) == pytest.approx(7.0 / 15.0, abs=1e-12)
    assert cc(B_PRED, B_REF) == pytest.approx(0.4 / math.sqrt(0.7 * 4.0 / 3.0), abs=1e-12)
    assert kld(B_PRED, B_REF) == pytest.approx(0.5 * math.log(5.625), abs=1e-12)


def test_negative_correlation() -> None:
    # pred = 1 - ref exactly -> CC = -1; P = [.5,0,.5,0]... (disjoint support) -> SIM = 0
    ref = np.array([[0.0, 1.0], [0.0, 1.0]])
    pred = 1.0 - ref
    assert cc(pred, ref) == pytest.approx(-1.0, abs=1e-12)
    assert sim(pred, ref) == 0.0


@pytest.mark.parametrize("m", [A_PRED, A_REF, B_PRED, np.arange(12.0).reshape(3, 4) ** 2])
def test_identical_maps(m: np.ndarray) -> None:
    assert sim(m, m) == pytest.approx(1.0, abs=1e-12)
    assert cc(m, m) == pytest.approx(1.0, abs=1e-12)
    assert abs(kld(m, m)) < 1e-12


def test_cc_in_range_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((2, 5, 7))
        c1, c2 = cc(a, b), cc(b, a)
        assert c1 == pytest.approx(c2, abs=1e-14)
        assert -1.0 <= c1 <= 1.0
        assert c1 == pytest.approx(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), abs=1e-12)
    assert cc(B_PRED, B_REF) == pytest.approx(cc(B_REF, B_PRED), abs=1e-15)


def test_sim_is_symmetric_and_bounded() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 4, 4))
    s = sim(a, b)
    assert s == pytest.approx(sim(b, a), abs=1e-15)
    assert 0.0 <= s <= 1.0


def test_scale_invariance() -> None:
    for pred, ref in [(A_PRED, A_REF), (B_PRED, B_REF)]:
        scaled = pred * 7 + 3
        assert sim(scaled, ref) == pytest.approx(sim(pred, ref), abs=1e-12)
        assert cc(scaled, ref) == pytest.approx(cc(pred, ref), abs=1e-12)
        assert kld(scaled, ref) == pytest.approx(kld(pred, ref), abs=1e-12)
        assert kld(ref * 0.01 - 5, scaled) == pytest.approx(kld(ref, pred), rel=1e-9)


# --- constant maps ----------------------------------------------------------------------------


def test_constant_pred() -> None:
    # P uniform = .25 everywhere, Q = A_REF = [0, 1, 0, 0]
    # SIM = min(.25, 1) = .25;  KLD = 1 * log(EPS + 1 / (.25 + EPS)) = log 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sim(CONST, A_REF) == pytest.approx(0.25, abs=1e-15)
        assert math.isnan(cc(CONST, A_REF))
        assert kld(CONST, A_REF) == pytest.approx(math.log(4.0), abs=1e-12)


def test_constant_ref() -> None:
    # P = [0, 1, 0, 0], Q uniform = .25 everywhere
    # SIM = .25;  KLD = 3 * .25 * log(EPS + .25 / EPS) + .25 * log(EPS + .25 / (1 + EPS))
    expected = 0.75 * math.log(EPS + 0.25 / EPS) + 0.25 * math.log(0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sim(A_REF, CONST) == pytest.approx(0.25, abs=1e-15)
        assert math.isnan(cc(A_REF, CONST))
        assert kld(A_REF, CONST) == pytest.approx(expected, rel=1e-12)


def test_both_constant() -> None:
    # both uniform: SIM = 4 * .25 = 1; KLD = 4 * .25 * log(EPS + .25 / (.25 + EPS)) ~ 0
    zeros = np.zeros((2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sim(CONST, zeros) == pytest.approx(1.0, abs=1e-15)
        assert math.isnan(cc(CONST, zeros))
        assert abs(kld(CONST, zeros)) < 1e-14
        out = compare(CONST, zeros)
    assert out["pred_constant"] is True and out["ref_constant"] is True


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [sim, cc, kld, compare])
def test_shape_mismatch_names_both_shapes(fn) -> None:
    with pytest.raises(ValueError) as info:
        fn(np.zeros((2, 2)), np.zeros((2, 3)))
    msg = str(info.value)
    assert "(2, 2)" in msg and "(2, 3)" in msg


@pytest.mark.parametrize("fn", [sim, cc, kld])
def test_non_2d_pair_raises(fn) -> None:
    with pytest.raises(ValueError, match="2-D"):
        fn(np.zeros(4), np.zeros(4))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [sim, cc, kld])
def test_nonfinite_input_gives_nan(fn, bad_value: float) -> None:
    bad = B_PRED.copy()
    bad[0, 1] = bad_value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(fn(bad, B_REF))
        assert math.isnan(fn(B_REF, bad))


def test_compare_with_nan_does_not_raise() -> None:
    bad = A_PRED.copy()
    bad[0, 0] = np.nan
    out = compare(bad, A_REF)
    assert math.isnan(out["sim"]) and math.isnan(out["cc"]) and math.isnan(out["kld"])
    assert out["pred_constant"] is False and out["ref_constant"] is False


# --- no mutation ------------------------------------------------------------------------------


def test_inputs_not_mutated() -> None:
    pred = B_PRED * 7 + 3
    ref = B_REF.astype(np.float32)
    ints = np.array([[3, 9], [1, 1]], dtype=np.int64)
    with_nan = np.array([[0.0, np.nan], [2.0, 4.0]])
    copies = [x.copy() for x in (pred, ref, ints, with_nan)]
    compare(pred, ref)
    for fn in (sim, cc, kld):
        fn(pred, ref)
        fn(ints, ints)
    normalize_map(pred)
    normalize_map(ints)
    normalize_map(with_nan)
    to_distribution(pred)
    to_distribution(ints)
    is_constant(with_nan)
    summarize(with_nan)
    for arr, keep in zip((pred, ref, ints, with_nan), copies):
        np.testing.assert_array_equal(arr, keep)
        assert arr.dtype == keep.dtype


# --- compare / summarize ----------------------------------------------------------------------


def test_compare_keys_and_values() -> None:
    out = compare(A_PRED, A_REF)
    assert set(out) == {"sim", "cc", "kld", "rmse", "pred_constant", "ref_constant"}
    assert out["sim"] == pytest.approx(0.5)
    assert out["cc"] == pytest.approx(1.0 / math.sqrt(3.0))
    assert out["kld"] == pytest.approx(math.log(2.0))
    assert out["pred_constant"] is False and out["ref_constant"] is False
    assert all(type(out[k]) is float for k in ("sim", "cc", "kld"))

    out_c = compare(A_PRED, CONST)
    assert out_c["pred_constant"] is False and out_c["ref_constant"] is True
    assert math.isnan(out_c["cc"])


def test_summarize_counts_and_excludes_nan() -> None:
    # non-NaN values 1, 2, 3: mean 2, sample std sqrt(((1)^2 + 0 + 1^2) / (3 - 1)) = 1
    s = summarize(np.array([1.0, np.nan, 2.0, 3.0, np.nan]))
    assert s == {"mean": 2.0, "std": 1.0, "n": 3, "n_nan": 2}


def test_summarize_uses_ddof1() -> None:
    # values 0, 4: mean 2; ddof=1 -> sqrt((4 + 4) / 1) = sqrt(8); ddof=0 would give 2
    s = summarize(np.array([0.0, 4.0]))
    assert s["std"] == pytest.approx(math.sqrt(8.0))


def test_summarize_single_and_empty() -> None:
    assert summarize(np.array([5.0])) == {"mean": 5.0, "std": 0.0, "n": 1, "n_nan": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        all_nan = summarize(np.array([np.nan, np.nan]))
        empty = summarize(np.array([]))
    assert math.isnan(all_nan["mean"]) and math.isnan(all_nan["std"])
    assert all_nan["n"] == 0 and all_nan["n_nan"] == 2
    assert math.isnan(empty["mean"]) and empty["n"] == 0 and empty["n_nan"] == 0


def test_summarize_of_metric_values() -> None:
    vals = np.array([cc(A_PRED, A_REF), cc(CONST, A_REF), cc(B_PRED, B_REF)])
    s = summarize(vals)
    assert s["n"] == 2 and s["n_nan"] == 1
    expected = (1.0 / math.sqrt(3.0) + 0.4 / math.sqrt(0.7 * 4.0 / 3.0)) / 2.0
    assert s["mean"] == pytest.approx(expected)


def test_metrics_module_imports_only_numpy_and_stdlib() -> None:
    import ast
    import sys
    from pathlib import Path

    tree = ast.parse(Path(metrics.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    non_std = {r for r in roots if r not in sys.stdlib_module_names}
    assert non_std == {"numpy", "ot"}  # ot: POT's exact EMD solver, imported inside emd() only


# --- NSS, RMSE, EMD: hand values ---------------------------------------------------------------


def test_nss_hand_value() -> None:
    # pred flat [0, 1, 1, 0]: mean .5, population std .5 -> z = [-1, 1, 1, -1]; fixation at index 1 -> 1
    assert nss(A_PRED, A_REF) == pytest.approx(1.0)
    # fixations on both zeros -> -1
    assert nss(A_PRED, np.array([[1, 0], [0, 1]])) == pytest.approx(-1.0)
    assert math.isnan(nss(CONST, A_REF)) and math.isnan(nss(A_PRED, np.zeros((2, 2))))


def test_rmse_hand_value() -> None:
    # A: normalised maps [0,1,1,0] and [0,1,0,0] differ in one of 4 cells by 1 -> sqrt(1/4) = .5
    assert rmse(A_PRED, A_REF) == pytest.approx(0.5)
    assert rmse(B_PRED, B_PRED * 3 + 2) == pytest.approx(0.0)  # affine-invariant
    assert rmse(A_PRED, 1 - A_PRED) == pytest.approx(1.0)


def test_emd_moves_mass_by_its_distance() -> None:
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[0, 0] = b[0, 1] = 1.0
    assert emd(a, b, size=4) == pytest.approx(1.0)  # all mass one cell to the right
    c = np.zeros((4, 4))
    c[3, 3] = 1.0
    assert emd(a, c, size=4) == pytest.approx(3 * math.sqrt(2))  # diagonal corner to corner
    assert emd(a, a, size=4) == pytest.approx(0.0, abs=1e-12)


def test_emd_matches_scipy_wasserstein_on_one_row() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    p, q = rng.random(8), rng.random(8)
    # a single-row map can't be passed through the 2-D downsampling, so embed each row in 8 identical rows:
    # every row carries the same 1-D problem, and the optimal plan never moves mass between rows
    P, Q = np.tile(p, (8, 1)), np.tile(q, (8, 1))
    pn, qn = (p - p.min()) / np.ptp(p), (q - q.min()) / np.ptp(q)
    expected = wasserstein_distance(np.arange(8), np.arange(8), pn, qn)
    assert emd(P, Q, size=8) == pytest.approx(expected, rel=1e-6)


def test_emd_rejects_tiny_grid_and_gives_nan_for_nonfinite() -> None:
    with pytest.raises(ValueError, match="size"):
        emd(A_PRED, A_REF, size=1)
    bad = A_PRED.copy()
    bad[0, 0] = np.nan
    assert math.isnan(emd(bad, A_REF, size=2))


# --- against an independent implementation of the MIT saliency benchmark's MATLAB code -----------


def _mit_normalize(m: np.ndarray) -> np.ndarray:  # `(m - min(m(:))) / (max(m(:)) - min(m(:)))`
    m = np.asarray(m, dtype=float)
    return (m - m.min()) / (m.max() - m.min())


def _mit_similarity(a: np.ndarray, b: np.ndarray) -> float:  # similarity.m
    a, b = _mit_normalize(a), _mit_normalize(b)
    a, b = a / a.sum(), b / b.sum()
    return float(np.sum(np.minimum(a, b)))


def _mit_cc(a: np.ndarray, b: np.ndarray) -> float:  # CC.m: (x - mean) / std, then corr2
    a = (a - a.mean()) / a.std(ddof=1)
    b = (b - b.mean()) / b.std(ddof=1)
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def _mit_kld(a: np.ndarray, b: np.ndarray) -> float:  # KLdiv.m: salMap = pred, fixationMap = ref
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a / a.sum(), b / b.sum()
    return float(np.sum(b * np.log(2.2204e-16 + b / (a + 2.2204e-16))))


def _mit_nss(a: np.ndarray, fix: np.ndarray) -> float:  # NSS.m: (map - mean) / std at the fixations
    z = (a - a.mean()) / a.std(ddof=1)
    return float(z[fix > 0].mean())


@pytest.mark.parametrize("seed", range(5))
def test_against_independent_mit_formulas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, ref = rng.random((9, 7)), rng.random((9, 7)) ** 3
    fix = rng.random((9, 7)) > 0.8
    assert sim(pred, ref) == pytest.approx(_mit_similarity(pred, ref), rel=1e-12)
    assert cc(pred, ref) == pytest.approx(_mit_cc(pred, ref), rel=1e-12)
    # the MIT KLdiv has no min-max step: feed it the normalised maps, as edgecam defines KLD on them
    assert kld(pred, ref) == pytest.approx(_mit_kld(_mit_normalize(pred), _mit_normalize(ref)), rel=1e-9)
    # NSS.m standardises with MATLAB's std (ddof=1); edgecam with the population std: a fixed factor
    n = pred.size
    assert nss(pred, fix) == pytest.approx(_mit_nss(pred, fix) * math.sqrt(n / (n - 1)), rel=1e-12)


# --- property tests ----------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

_shapes = st.tuples(st.integers(2, 9), st.integers(2, 9))
# no subnormals: other tests in the session flush denormals (torch.set_flush_denormal), which hypothesis refuses
_finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)
_any = st.one_of(_finite, st.just(float("nan")), st.just(float("inf")), st.just(0.0))


@st.composite
def _pair(draw: st.DrawFn, elements: st.SearchStrategy[float] = _finite) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(_shapes)
    return draw(arrays(np.float64, shape, elements=elements)), draw(arrays(np.float64, shape, elements=elements))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pair())
def test_property_bounds_and_no_mutation(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, r = pair
    p0, r0 = p.copy(), r.copy()
    s, c, k, e = sim(p, r), cc(p, r), kld(p, r), rmse(p, r)
    assert 0.0 <= s <= 1.0 + 1e-12
    assert math.isnan(c) or -1.0 <= c <= 1.0
    assert k >= -1e-9
    assert 0.0 <= e <= 1.0
    assert emd(p, r, size=2) >= 0.0
    n = nss(p, r > 0)
    assert math.isnan(n) or math.isfinite(n)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(r, r0)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, _shapes, elements=_finite))
def test_property_identity(m: np.ndarray) -> None:
    if is_constant(m):
        assert math.isnan(cc(m, m)) and sim(m, m) == pytest.approx(1.0)
        return
    assert sim(m, m) == pytest.approx(1.0)
    assert cc(m, m) == pytest.approx(1.0)
    assert kld(m, m) == pytest.approx(0.0, abs=1e-9)
    assert rmse(m, m) == 0.0
    assert emd(m, m, size=3) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(_pair(_any))
def test_property_nan_inf_constant_never_raise(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, r = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compare(p, r)
        for value in (emd(p, r, size=2), nss(p, r > 0)):
            assert isinstance(value, float)
    assert set(out) >= {"sim", "cc", "kld", "rmse"}
    if not (np.isfinite(p).all() and np.isfinite(r).all()):
        assert all(math.isnan(out[k]) for k in ("sim", "cc", "kld", "rmse"))
