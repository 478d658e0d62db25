"""summary.csv's counts: `_nan` counts the values that were computed and came out NaN; the images a subset
metric (Deletion / Insertion: the first `explain.faithfulness_images` images) was not computed for are
`_not_measured`, never NaNs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgecam.bench.results import faithfulness_subset, summarise


def _rows(n: int, measured: int, nan_at: int) -> pd.DataFrame:
    """n images of one variant pair; Deletion AUC computed for the first `measured` (the one at `nan_at` came
    out NaN: outputs not finite), NaN for the rest as the explain stage leaves them."""
    rows = []
    for precision in ("fp32", "int8"):
        for i in range(n):
            deletion = np.nan if i >= measured or (precision == "int8" and i == nan_at) else 0.1 + 0.01 * i
            rows.append({"model": "a", "format": "onnx", "runtime": "ort", "cam_method": "m", "cam_mode": "mirror", "precision": precision,
                         "image_id": f"img{i}", "cam_constant": False, "has_gt": False, "sim_fp32": 1.0, "cc_fp32": 1.0, "kld_fp32": 0.0,
                         "deletion_auc": deletion, "insertion_auc": deletion, "act_std": np.nan if precision == "int8" and i == nan_at else 1.0})
    return pd.DataFrame(rows)


def test_images_past_the_faithfulness_subset_are_not_measured_not_nan() -> None:
    ids = [f"img{i}" for i in range(10)]
    s = summarise(_rows(10, measured=4, nan_at=1), ["a"], n_boot=200, measured=faithfulness_subset(ids, 4)).set_index(["precision", "metric"])
    fp32, int8 = s.loc[("fp32", "deletion_auc")], s.loc[("int8", "deletion_auc")]
    assert (fp32["a_nan"], fp32["a_not_measured"]) == (0, 6)  # six images past the subset: not NaNs
    assert (int8["a_nan"], int8["a_not_measured"]) == (1, 6)  # one computed NaN among the four measured
    assert np.isclose(fp32["a_mean"], np.mean([0.10, 0.11, 0.12, 0.13]))
    assert np.isclose(int8["a_mean"], np.mean([0.10, 0.12, 0.13]))
    act = s.loc[("int8", "act_std")]  # a column the subset does not name: every image measured
    assert (act["a_nan"], act["a_not_measured"]) == (1, 0)


def test_faithfulness_off_measures_nothing_and_no_subset_means_every_image() -> None:
    rows = _rows(5, measured=0, nan_at=-1)
    off = summarise(rows, ["a"], n_boot=200, measured=faithfulness_subset([f"img{i}" for i in range(5)], 0)).set_index(["precision", "metric"])
    assert (off.loc[("fp32", "insertion_auc"), "a_nan"], off.loc[("fp32", "insertion_auc"), "a_not_measured"]) == (0, 5)
    assert np.isnan(off.loc[("fp32", "insertion_auc"), "a_mean"])
    plain = summarise(rows, ["a"], n_boot=200).set_index(["precision", "metric"])  # no subset given (a library call): every NaN counts
    assert (plain.loc[("fp32", "insertion_auc"), "a_nan"], plain.loc[("fp32", "insertion_auc"), "a_not_measured"]) == (5, 0)


def test_the_subset_is_the_first_n_test_images() -> None:
    subset = faithfulness_subset(["x", "y", "z"], 2)
    assert subset == {"deletion_auc": frozenset({"x", "y"}), "insertion_auc": frozenset({"x", "y"})}
    assert faithfulness_subset(["x"], 5)["deletion_auc"] == frozenset({"x"}) and faithfulness_subset(["x"], 0)["deletion_auc"] == frozenset()
