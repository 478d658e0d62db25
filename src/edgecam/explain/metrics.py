"""Saliency-map comparison metrics: SIM, CC and KLD, in pure numpy.

Definitions follow Bylinskii et al., "What do different evaluation metrics tell us about saliency
models?" (TPAMI 2018), and the MIT saliency benchmark code. Here they compare two class activation
maps of the same shape: ``pred`` (e.g. the CAM of the quantized model) against ``ref`` (the CAM of
the float reference). Both maps are min-max normalised to [0, 1] first, so every metric is invariant
to a positive affine rescaling ``a * m + b`` (a > 0) of either map.

Conventions shared by all metrics:

* the two maps must be 2-D and of the same shape, otherwise ``ValueError`` (naming both shapes);
* a map holding NaN or +/-Inf gives ``nan`` for the metric (no exception, no warning);
* a constant map becomes the uniform distribution ``1/N`` for SIM and KLD, and makes CC ``nan``
  (the correlation with a constant is undefined).

Inputs are never modified: the per-pair functions work on float64 copies; a `PreparedMap` reads its input
without writing to it (keep the input unchanged while the prepared map is in use: its derived arrays are computed
on first use).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "EPS",
    "PreparedMap",
    "cc",
    "cc_prepared",
    "compare",
    "compare_batch",
    "compare_prepared",
    "emd",
    "emd_prepared",
    "is_constant",
    "kld",
    "normalize_map",
    "nss",
    "nss_prepared",
    "rmse",
    "sim",
    "summarize",
    "to_distribution",
]

#: Regulariser of the KLD (MATLAB's ``eps``, as in the MIT saliency benchmark code).
EPS: float = 2.2204e-16


def _as_2d(m: np.ndarray, name: str = "map") -> np.ndarray:
    """Return ``m`` as a float64 2-D array that does not share memory with the input."""
    arr = np.array(m, dtype=np.float64, copy=True)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got {arr.ndim}-D array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


def _finite_range(arr: np.ndarray) -> tuple[float, float] | None:
    """Min and max over the finite entries of ``arr``; ``None`` when there are none."""
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, ref) pair: same shape, both 2-D; return float64 copies."""
    p = np.array(pred, dtype=np.float64, copy=True)
    r = np.array(ref, dtype=np.float64, copy=True)
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {r.shape}")
    return _as_2d(p, "pred"), _as_2d(r, "ref")


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def normalize_map(m: np.ndarray) -> np.ndarray:
    """Min-max normalise a 2-D map to [0, 1]: ``(m - min(m)) / (max(m) - min(m))``.

    Min and max are taken over the finite entries. A constant map (max == min) or a map with no
    finite value returns all zeros. Otherwise non-finite entries come out as NaN.
    Raises ``ValueError`` for a non-2-D or empty input. Returns a new array.
    """
    arr = _as_2d(m)
    rng = _finite_range(arr)
    if rng is None or rng[0] == rng[1]:
        return np.zeros_like(arr)
    lo, hi = rng
    finite = np.isfinite(arr)
    with np.errstate(over="ignore", invalid="ignore"):
        span = hi - lo
        if math.isfinite(span):
            out = (arr - lo) / span
        else:  # e.g. lo=-1e308, hi=1e308: halve everything to stay in range
            out = (arr / 2.0 - lo / 2.0) / (hi / 2.0 - lo / 2.0)
    out = np.where(finite, np.clip(out, 0.0, 1.0), np.nan)
    return out


def is_constant(m: np.ndarray) -> bool:
    """True when the finite entries of the 2-D map ``m`` are all equal, or when it has none."""
    rng = _finite_range(_as_2d(m))
    return rng is None or rng[0] == rng[1]


def to_distribution(m: np.ndarray) -> np.ndarray:
    """Turn a 2-D map into a probability distribution: ``P = N(m) / sum(N(m))``, N = min-max.

    A constant map (sum 0 after normalisation) becomes the uniform distribution ``1/N``.
    A map with some non-finite entries gives an all-NaN result. Returns a new array.
    """
    norm = normalize_map(m)
    total = float(norm.sum())
    if total == 0.0:
        return np.full_like(norm, 1.0 / norm.size)
    if not math.isfinite(total):
        return np.full_like(norm, np.nan)
    return norm / total


def sim(pred: np.ndarray, ref: np.ndarray) -> float:
    """Similarity (histogram intersection), Bylinskii et al. eq. 3: ``SIM = sum_i min(P_i, Q_i)``.

    P, Q are the distributions of ``pred`` and ``ref`` (:func:`to_distribution`). In [0, 1];
    1 for identical maps. ``nan`` when an input holds NaN/Inf.
    """
    p, r = _check_pair(pred, ref)
    if not _all_finite(p, r):
        return float("nan")
    return float(np.minimum(to_distribution(p), to_distribution(r)).sum())


def cc(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson's linear correlation coefficient, Bylinskii et al. eq. 4: ``cov(P, Q) / (s_P s_Q)``.

    Computed on the min-max normalised maps. In [-1, 1]; symmetric in its arguments.
    ``nan`` (no exception, no warning) when either map is constant or holds NaN/Inf.
    """
    p, r = _check_pair(pred, ref)
    if not _all_finite(p, r) or is_constant(p) or is_constant(r):
        return float("nan")
    a = normalize_map(p).ravel()
    b = normalize_map(r).ravel()
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    if denom == 0.0:  # cannot happen for non-constant maps; kept as a guard
        return float("nan")
    return float(np.clip(float(a @ b) / denom, -1.0, 1.0))


def kld(pred: np.ndarray, ref: np.ndarray) -> float:
    """Kullback-Leibler divergence, Bylinskii et al. eq. 6: ``sum_i Q_i log(EPS + Q_i / (P_i + EPS))``.

    P is the distribution of ``pred``, Q that of ``ref`` (the distribution compared against).
    >= 0 up to EPS-sized terms; ~0 for identical maps; not symmetric.
    ``nan`` when an input holds NaN/Inf.
    """
    p, r = _check_pair(pred, ref)
    if not _all_finite(p, r):
        return float("nan")
    P = to_distribution(p)
    Q = to_distribution(r)
    return float(np.sum(Q * np.log(EPS + Q / (P + EPS))))


def nss(pred: np.ndarray, fixations: np.ndarray) -> float:
    """Normalized Scanpath Saliency, Bylinskii et al. eq. 2 (Peters et al. 2005): the map standardised to zero
    mean and unit (population) std, averaged over the positions where the binary `fixations` map is true.

    ``nan`` when the map is constant or holds NaN/Inf, or when there is no fixation.
    """
    p, f = _check_pair(pred, fixations)
    mask = f > 0
    if not _all_finite(p) or is_constant(p) or not mask.any():
        return float("nan")
    n = normalize_map(p)  # NSS is affine-invariant; normalising first keeps tiny ranges from underflowing
    sd = float(n.std())
    if sd == 0.0:
        return float("nan")
    return float(((n - n.mean()) / sd)[mask].mean())


def rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Root mean squared error between the min-max normalised maps (Rogers et al. 2023, "Quantized XAI"),
    in [0, 1]; 0 for maps equal up to a positive affine rescaling. ``nan`` when an input holds NaN/Inf."""
    p, r = _check_pair(pred, ref)
    if not _all_finite(p, r):
        return float("nan")
    return float(np.sqrt(np.mean((normalize_map(p) - normalize_map(r)) ** 2)))


_AREA_WEIGHTS: dict[tuple[int, int], np.ndarray] = {}


def _area_weights(n: int, size: int) -> np.ndarray:
    """(size, n): share of source cell j inside target cell i (cached per (n, size); read-only)."""
    w = _AREA_WEIGHTS.get((n, size))
    if w is None:
        edges = np.linspace(0, n, size + 1)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n)[None, :]
        w = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
        w.setflags(write=False)
        _AREA_WEIGHTS[(n, size)] = w
    return w


def _area_downsample(m: np.ndarray, size: int) -> np.ndarray:
    """Area-weighted sums of a 2-D map over a size x size grid (cv2.INTER_AREA up to a constant factor, exact
    for non-divisible sizes); the factor cancels when the result is made a distribution."""
    h, w = m.shape
    return _area_weights(h, size) @ m @ _area_weights(w, size).T


_GROUND: dict[int, np.ndarray] = {}


def _ground(size: int) -> np.ndarray:
    """Euclidean distances (in cells) between the centres of a size x size grid's cells, cached per size."""
    if size not in _GROUND:
        yy, xx = np.mgrid[:size, :size]
        pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
        g = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        g.setflags(write=False)
        _GROUND[size] = g
    return _GROUND[size]


def emd(pred: np.ndarray, ref: np.ndarray, size: int = 32) -> float:
    """Earth Mover's Distance, Bylinskii et al. eq. 7: the least total mass x distance that turns the
    distribution of `pred` into that of `ref`, both downsampled to size x size by area averaging, with the
    Euclidean ground distance between cell centres (in cells). Solved exactly (network simplex, `ot.emd2`).

    The value is in cells of the size x size grid: one cell is (H / size) input pixels, so the same pair gives
    about half the value at half the size. 0 for identical maps; symmetric; ``nan`` when an input holds NaN/Inf.
    Cost grows steeply with `size` (a size^2 x size^2 transport problem): per 224 x 224 pair on a 2-core x86 host,
    ~1 ms at 8, ~3.4 ms at 12, ~9 ms at 16, ~300 ms at 32.
    """
    if size < 2:
        raise ValueError(f"emd: size must be >= 2, got {size}")
    p, r = _check_pair(pred, ref)
    return emd_prepared(PreparedMap(p, "pred"), PreparedMap(r, "ref"), size)


def compare(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | bool]:
    """The cheap metrics for one pair: ``{"sim", "cc", "kld", "rmse", "pred_constant", "ref_constant"}``
    (the values of `sim`, `cc`, `kld`, `rmse` and `is_constant`, each map normalised once)."""
    p, r = _check_pair(pred, ref)
    return compare_prepared(PreparedMap(p, "pred"), PreparedMap(r, "ref"))


# --- maps prepared once, compared many times --------------------------------------------------------------------


class PreparedMap:
    """A 2-D map made ready once for many comparisons: what `compare`, `sim`, `cc`, `kld`, `rmse`, `nss` and `emd`
    would each recompute per call (the float64 map, finiteness, constancy, the min-max normalised map, its
    distribution, its centred form for CC), computed at most once. The `*_prepared` functions give the per-pair
    functions' values bit for bit (same operations in the same order); the input is never modified (the
    derived arrays are new and read-only).

    `values`: the map as float64 (the input itself when it already is one; not written to); `finite`: no
    NaN / +-Inf; `constant`: `is_constant` (finite entries all equal, or none).
    """

    __slots__ = ("values", "finite", "constant", "_lo", "_hi", "_norm", "_total", "_dist", "_centred", "_ss")

    def __init__(self, m: np.ndarray, name: str = "map") -> None:
        arr = np.asarray(m, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array, got {arr.ndim}-D array of shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
        self.values = arr
        self.finite = bool(np.isfinite(arr).all())
        rng = (float(arr.min()), float(arr.max())) if self.finite else _finite_range(arr)
        self.constant = rng is None or rng[0] == rng[1]
        self._lo, self._hi = rng if rng is not None else (math.nan, math.nan)
        self._norm: np.ndarray | None = None
        self._total: float | None = None
        self._dist: np.ndarray | None = None
        self._centred: np.ndarray | None = None
        self._ss = math.nan

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    @property
    def norm(self) -> np.ndarray:
        """`normalize_map` of the map."""
        if self._norm is None:
            span = self._hi - self._lo
            if self.finite and not self.constant and math.isfinite(span):
                out = self.values - self._lo  # normalize_map's common case, without its copies and masks
                out /= span
                np.clip(out, 0.0, 1.0, out=out)
            else:
                out = normalize_map(self.values)
            out.setflags(write=False)
            self._norm = out
        return self._norm

    @property
    def total(self) -> float:
        """``float(norm.sum())``."""
        if self._total is None:
            self._total = float(self.norm.sum())
        return self._total

    @property
    def dist(self) -> np.ndarray:
        """`to_distribution` of the map."""
        if self._dist is None:
            norm, total = self.norm, self.total
            if total == 0.0:
                out = np.full_like(norm, 1.0 / norm.size)
            elif not math.isfinite(total):
                out = np.full_like(norm, np.nan)
            else:
                out = norm / total
            out.setflags(write=False)
            self._dist = out
        return self._dist

    def _centre(self) -> tuple[np.ndarray, float]:
        """The normalised map, flattened and centred, and its squared norm (CC's a and a @ a)."""
        if self._centred is None:
            a = self.norm.ravel()
            a = a - a.mean()
            a.setflags(write=False)
            self._centred, self._ss = a, float(a @ a)
        return self._centred, self._ss


def _check_prepared(p: PreparedMap, r: PreparedMap) -> None:
    if p.shape != r.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {r.shape}")


def cc_prepared(p: PreparedMap, r: PreparedMap) -> float:
    """`cc` of two prepared maps."""
    _check_prepared(p, r)
    if not (p.finite and r.finite) or p.constant or r.constant:
        return float("nan")
    a, aa = p._centre()
    b, bb = r._centre()
    denom = math.sqrt(aa * bb)
    if denom == 0.0:
        return float("nan")
    return float(np.clip(float(a @ b) / denom, -1.0, 1.0))


_CHEAP = ("sim", "cc", "kld", "rmse")


def compare_prepared(p: PreparedMap, r: PreparedMap, metrics: tuple[str, ...] = _CHEAP) -> dict[str, float | bool]:
    """`compare` of two prepared maps, restricted to `metrics` (a subset of sim, cc, kld, rmse), with
    ``pred_constant`` and ``ref_constant``."""
    _check_prepared(p, r)
    unknown = set(metrics) - set(_CHEAP)
    if unknown:
        raise ValueError(f"compare_prepared: unknown metrics {sorted(unknown)}; known: {list(_CHEAP)}")
    nan = float("nan")
    finite = p.finite and r.finite
    out: dict[str, float | bool] = {}
    for name in metrics:
        if name == "cc":
            out["cc"] = cc_prepared(p, r)
        elif not finite:
            out[name] = nan
        elif name == "sim":
            out["sim"] = float(np.minimum(p.dist, r.dist).sum())
        elif name == "kld":
            P, Q = p.dist, r.dist
            out["kld"] = float(np.sum(Q * np.log(EPS + Q / (P + EPS))))
        else:
            out["rmse"] = float(np.sqrt(np.mean((p.norm - r.norm) ** 2)))
    out["pred_constant"] = p.constant
    out["ref_constant"] = r.constant
    return out


def compare_batch(preds: np.ndarray, refs: np.ndarray) -> dict[str, np.ndarray]:
    """`compare` of each pair of two (N, H, W) stacks: ``{"sim", "cc", "kld", "rmse"}`` as (N,) float64 and
    ``{"pred_constant", "ref_constant"}`` as (N,) bool, equal to `compare(preds[i], refs[i])`. Each map is
    prepared once; the stacks are not copied as a whole (one map at a time in float64)."""
    P, R = np.asarray(preds), np.asarray(refs)
    if P.ndim != 3 or R.ndim != 3:
        raise ValueError(f"preds and refs must be (N, H, W) stacks, got shapes {P.shape} and {R.shape}")
    if P.shape != R.shape:
        raise ValueError(f"preds and refs must have the same shape, got preds {P.shape} and refs {R.shape}")
    n = P.shape[0]
    out: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in _CHEAP}
    out["pred_constant"] = np.zeros(n, dtype=bool)
    out["ref_constant"] = np.zeros(n, dtype=bool)
    for i in range(n):
        row = compare_prepared(PreparedMap(P[i], "pred"), PreparedMap(R[i], "ref"))
        for k, v in row.items():
            out[k][i] = v
    return out


def nss_prepared(p: PreparedMap, fixations: np.ndarray) -> float:
    """`nss` of a prepared map against a binary fixation map (``fixations > 0``)."""
    f = np.asarray(fixations)
    if f.shape != p.shape:
        raise ValueError(f"pred and ref must have the same shape, got pred {p.shape} and ref {f.shape}")
    mask = f if f.dtype == np.bool_ else np.asarray(f, dtype=np.float64) > 0
    if not p.finite or p.constant or not mask.any():
        return float("nan")
    n = p.norm
    sd = float(n.std())
    if sd == 0.0:
        return float("nan")
    return float(((n - n.mean()) / sd)[mask].mean())


def import_pot() -> Any:
    """POT (`ot`), without its JAX / TensorFlow / CuPy backends: it imports every one it finds at import time (JAX
    alone: 2 s of the 2.9 s import here), and EMD only needs numpy arrays. A user's own setting of POT's
    `POT_BACKEND_DISABLE_*` variables wins."""
    import os

    for name in ("JAX", "TENSORFLOW", "CUPY"):
        os.environ.setdefault(f"POT_BACKEND_DISABLE_{name}", "1")
    import ot

    return ot


def emd_prepared(p: PreparedMap, r: PreparedMap, size: int = 32) -> float:
    """`emd` of two prepared maps."""
    ot = import_pot()

    if size < 2:
        raise ValueError(f"emd: size must be >= 2, got {size}")
    _check_prepared(p, r)
    if not (p.finite and r.finite):
        return float("nan")
    a = to_distribution(_area_downsample(p.norm, size)).ravel()
    b = to_distribution(_area_downsample(r.norm, size)).ravel()
    # center_dual / check_marginals only touch the dual potentials and an assertion on the masses (both sum
    # to 1 here), not the cost: skipping them saves ~0.2 ms a call
    return float(max(0.0, ot.emd2(a, b, _ground(size), numItermax=1_000_000, center_dual=False, check_marginals=False)))


def summarize(values: np.ndarray) -> dict[str, float | int]:
    """Mean and standard deviation of metric values, ignoring NaN.

    Returns ``{"mean", "std", "n", "n_nan"}``: ``n`` is the number of non-NaN values used,
    ``n_nan`` the number of NaN values left out. ``std`` is the sample standard deviation
    (ddof=1) when n > 1, and 0.0 when n == 1. With n == 0, mean and std are NaN.
    The input may have any shape; it is flattened.
    """
    arr = np.array(values, dtype=np.float64, copy=True).ravel()
    nan_mask = np.isnan(arr)
    kept = arr[~nan_mask]
    n = int(kept.size)
    n_nan = int(nan_mask.sum())
    if n == 0:
        mean = std = float("nan")
    else:
        mean = float(kept.mean())
        std = float(kept.std(ddof=1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "n_nan": n_nan}
