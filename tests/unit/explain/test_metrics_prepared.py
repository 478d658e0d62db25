"""Maps prepared once (`PreparedMap`) and the batched / prepared metrics: equal to the per-pair functions, bit for
bit, on random maps and on the degenerate ones (constant, all-zero, NaN, +-Inf, a range that overflows)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecam.explain.metrics import (
    PreparedMap,
    cc,
    cc_prepared,
    compare,
    compare_batch,
    compare_prepared,
    emd,
    emd_prepared,
    is_constant,
    kld,
    normalize_map,
    nss,
    nss_prepared,
    rmse,
    sim,
    to_distribution,
)


def _same(a: float, b: float) -> bool:
    """Equal, or both NaN (the per-pair functions' NaN conventions must carry over)."""
    return (a == b) or (math.isnan(a) and math.isnan(b))


def _maps(shape: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Smooth and noisy random maps (float64 and float32) and every degenerate kind the metrics special-case."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out: list[np.ndarray] = []
    for _ in range(4):
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, max(h, w) / 2)
        out.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))  # a blob
        out.append(rng.random(shape) ** 3)  # noise
    out.append((rng.random(shape) * 5 - 2).astype(np.float32))
    out.append(np.zeros(shape))  # an all-zero CAM
    out.append(np.full(shape, 3.5))  # constant, non-zero
    nan = rng.random(shape)
    nan[0, 0] = np.nan
    out.append(nan)
    inf = rng.random(shape)
    inf[-1, -1] = np.inf
    out.append(inf)
    out.append(np.full(shape, np.nan))  # no finite value at all
    huge = rng.random(shape) * 1e308
    huge[0, -1] = -1e308  # max - min overflows: normalize_map's halved branch
    out.append(huge)
    step = np.zeros(shape)
    step[: h // 2] = 1.0  # two values only
    out.append(step)
    return out


SHAPES = [(24, 20), (7, 9), (1, 5), (64, 64)]


@pytest.mark.parametrize("shape", SHAPES)
def test_prepared_map_matches_the_per_map_functions(shape: tuple[int, int]) -> None:
    for m in _maps(shape):
        before = m.copy()
        p = PreparedMap(m)
        np.testing.assert_array_equal(p.norm, normalize_map(m))
        np.testing.assert_array_equal(p.dist, to_distribution(m))
        assert p.constant == is_constant(m)
        assert p.finite == bool(np.isfinite(m).all())
        np.testing.assert_array_equal(m, before)  # never modified
        assert not p.norm.flags.writeable and not p.dist.flags.writeable


@pytest.mark.parametrize("shape", SHAPES)
def test_compare_prepared_and_compare_equal_the_per_pair_functions(shape: tuple[int, int]) -> None:
    maps = _maps(shape)
    for a in maps:
        pa = PreparedMap(a)
        for b in maps:
            pb = PreparedMap(b)
            got = compare_prepared(pa, pb)
            ref = {"sim": sim(a, b), "cc": cc(a, b), "kld": kld(a, b), "rmse": rmse(a, b)}
            for k, v in ref.items():
                assert _same(got[k], v), (k, got[k], v)
                assert _same(compare(a, b)[k], v)
            assert got["pred_constant"] == is_constant(a) and got["ref_constant"] == is_constant(b)
            assert _same(cc_prepared(pa, pb), cc(a, b))
            sub = compare_prepared(pa, pb, ("sim", "kld"))
            assert set(sub) == {"sim", "kld", "pred_constant", "ref_constant"}
            assert _same(sub["sim"], ref["sim"]) and _same(sub["kld"], ref["kld"])


@pytest.mark.parametrize("shape", SHAPES)
def test_compare_batch_equals_compare_per_pair(shape: tuple[int, int]) -> None:
    maps = _maps(shape)
    rng = np.random.default_rng(1)
    preds = np.stack(maps).astype(np.float64)
    refs = preds[rng.permutation(len(maps))]
    refs = np.concatenate([refs[:-2], preds[:2]])  # a map against itself too
    p0, r0 = preds.copy(), refs.copy()
    got = compare_batch(preds, refs)
    assert set(got) == {"sim", "cc", "kld", "rmse", "pred_constant", "ref_constant"}
    for i in range(len(preds)):
        ref = compare(preds[i], refs[i])
        for k, v in ref.items():
            assert _same(got[k][i], v), (i, k, got[k][i], v)
    np.testing.assert_array_equal(preds, p0)
    np.testing.assert_array_equal(refs, r0)
    empty = compare_batch(np.zeros((0, *shape)), np.zeros((0, *shape)))
    assert all(v.shape == (0,) for v in empty.values())


def test_compare_batch_checks_its_stacks() -> None:
    with pytest.raises(ValueError, match="same shape"):
        compare_batch(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        compare_batch(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="same shape"):
        compare_prepared(PreparedMap(np.zeros((3, 3))), PreparedMap(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="2-D"):
        PreparedMap(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="empty"):
        PreparedMap(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="unknown metrics"):
        compare_prepared(PreparedMap(np.eye(3)), PreparedMap(np.eye(3)), ("emd",))


@pytest.mark.parametrize("shape", SHAPES)
def test_nss_prepared_equals_nss(shape: tuple[int, int]) -> None:
    maps = _maps(shape)
    rng = np.random.default_rng(2)
    for m in maps:
        for fix in (rng.random(shape) > 0.7, np.zeros(shape, dtype=bool), (rng.random(shape) > 0.5).astype(np.float32)):
            assert _same(nss_prepared(PreparedMap(m), fix), nss(m, fix))


def _emd_reference(pred: np.ndarray, ref: np.ndarray, size: int) -> float:
    """The EMD as first written (before maps were prepared once): POT's defaults, weights rebuilt per call."""
    import ot

    def down(m: np.ndarray) -> np.ndarray:
        def weights(n: int) -> np.ndarray:
            edges = np.linspace(0, n, size + 1)
            lo, hi = edges[:-1, None], edges[1:, None]
            j = np.arange(n)[None, :]
            return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)

        return weights(m.shape[0]) @ m @ weights(m.shape[1]).T

    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        return float("nan")
    a = to_distribution(down(normalize_map(pred))).ravel()
    b = to_distribution(down(normalize_map(ref))).ravel()
    yy, xx = np.mgrid[:size, :size]
    pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    ground = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(max(0.0, ot.emd2(a, b, ground, numItermax=1_000_000)))


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_emd_and_emd_prepared_equal_the_first_implementation(size: int) -> None:
    maps = _maps((24, 20))
    for i, a in enumerate(maps):
        for b in maps[i::3]:
            want = _emd_reference(a, b, size)
            assert _same(emd(a, b, size), want)
            assert _same(emd_prepared(PreparedMap(a), PreparedMap(b), size), want)
    with pytest.raises(ValueError, match="size must be >= 2"):
        emd_prepared(PreparedMap(maps[0]), PreparedMap(maps[1]), 1)
