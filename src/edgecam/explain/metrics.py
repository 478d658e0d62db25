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

Inputs are never modified: every function works on a float64 copy.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EPS",
    "cc",
    "compare",
    "emd",
    "is_constant",
    "kld",
    "normalize_map",
    "nss",
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


def _area_downsample(m: np.ndarray, size: int) -> np.ndarray:
    """Area-weighted sums of a 2-D map over a size x size grid (cv2.INTER_AREA up to a constant factor, exact
    for non-divisible sizes); the factor cancels when the result is made a distribution."""
    h, w = m.shape

    def weights(n: int) -> np.ndarray:  # (size, n): share of source cell j inside target cell i
        edges = np.linspace(0, n, size + 1)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n)[None, :]
        return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)

    return weights(h) @ m @ weights(w).T


_GROUND: dict[int, np.ndarray] = {}


def emd(pred: np.ndarray, ref: np.ndarray, size: int = 32) -> float:
    """Earth Mover's Distance, Bylinskii et al. eq. 7: the least total mass x distance that turns the
    distribution of `pred` into that of `ref`, both downsampled to size x size by area averaging, with the
    Euclidean ground distance between cell centres (in cells). Solved exactly (network simplex, `ot.emd2`).

    0 for identical maps; symmetric; ``nan`` when an input holds NaN/Inf.
    """
    import ot

    if size < 2:
        raise ValueError(f"emd: size must be >= 2, got {size}")
    p, r = _check_pair(pred, ref)
    if not _all_finite(p, r):
        return float("nan")
    a = to_distribution(_area_downsample(normalize_map(p), size)).ravel()
    b = to_distribution(_area_downsample(normalize_map(r), size)).ravel()
    if size not in _GROUND:
        yy, xx = np.mgrid[:size, :size]
        pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
        _GROUND[size] = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(max(0.0, ot.emd2(a, b, _GROUND[size], numItermax=1_000_000)))


def compare(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | bool]:
    """The cheap metrics for one pair: ``{"sim", "cc", "kld", "rmse", "pred_constant", "ref_constant"}``."""
    p, r = _check_pair(pred, ref)
    return {
        "sim": sim(p, r),
        "cc": cc(p, r),
        "kld": kld(p, r),
        "rmse": rmse(p, r),
        "pred_constant": is_constant(p),
        "ref_constant": is_constant(r),
    }


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
