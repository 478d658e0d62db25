"""`bench/outputs.py`'s readers: a damaged run-directory file (a truncated parquet or CSV, broken JSON, a cut
npz, arrays that do not match their ids) is a DamagedFileError naming the file and what to do, never the
parser's own exception."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgecam.bench import outputs as files
from edgecam.errors import DamagedFileError, EdgecamError

TABLE = pd.DataFrame({"model": ["m"] * 3, "image_id": ["a", "b", "c"], "cc_fp32": [0.1, 0.2, 0.3]})


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_good_files_read_back(tmp_path: Path) -> None:
    files.write_parquet(TABLE, tmp_path / files.RESULTS)
    files.write_csv(TABLE, tmp_path / files.BENCH)
    pd.testing.assert_frame_equal(files.read_table(tmp_path, files.RESULTS, ["model", "image_id"]), TABLE)
    pd.testing.assert_frame_equal(files.read_table(tmp_path, files.BENCH), TABLE)
    assert files.read_table(tmp_path, files.SUMMARY).empty  # absent: empty, as before


@pytest.mark.parametrize("name", [files.RESULTS, files.BENCH])
def test_a_truncated_table_names_the_file(tmp_path: Path, name: str) -> None:
    (files.write_parquet if name.endswith(".parquet") else files.write_csv)(TABLE, tmp_path / name)
    _cut(tmp_path / name, 30)
    with pytest.raises(DamagedFileError, match=rf"{name} \(a table of the run\) is damaged and cannot be read .*rerun the run that made it"):
        files.read_table(tmp_path, name)


def test_a_table_without_the_readers_columns_is_damaged(tmp_path: Path) -> None:
    files.write_parquet(TABLE.drop(columns="image_id"), tmp_path / files.RESULTS)
    with pytest.raises(DamagedFileError, match="no column image_id"):
        files.read_table(tmp_path, files.RESULTS, ["model", "image_id"])


@pytest.mark.parametrize(("text", "message"), [('{"device": ', "JSONDecodeError"), ('{"device": []}', "device is not a JSON object"),
                                               ("[1, 2]", "is not a JSON object"), ("[" * 100_000 + "]" * 100_000, "RecursionError")])
def test_a_broken_manifest_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / files.MANIFEST).write_text(text)
    with pytest.raises(DamagedFileError, match=message) as info:
        files.read_manifest(tmp_path)
    assert str(tmp_path / files.MANIFEST) in str(info.value) and isinstance(info.value, EdgecamError)


def test_no_manifest_is_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(DamagedFileError, match="not an edgecam run directory"):
        files.read_manifest(tmp_path)


def test_kept_outputs_damaged_or_mismatched_are_named(tmp_path: Path) -> None:
    kept = {"ids": np.array(["a", "b"]), "logits|m|onnx|fp32|ort": np.zeros((2, 10), np.float32)}
    files.write_kept(tmp_path, "m", 0, kept)
    assert set(files.read_kept(tmp_path)["logits|m|onnx|fp32|ort"]) == {"a", "b"}
    path = tmp_path / files.OUTPUTS / "m" / "0000000.npz"
    _cut(path, 200)
    with pytest.raises(DamagedFileError, match=r"0000000.npz \(kept outputs\) is damaged"):
        files.read_kept(tmp_path)
    files.write_kept(tmp_path, "m", 0, {**kept, "ids": np.array(["a", "b", "c"])})  # 3 ids for 2 rows
    with pytest.raises(DamagedFileError, match="2 rows for 3 image ids"):
        files.read_kept(tmp_path)
    files.write_kept(tmp_path, "m", 0, {"logits|x": np.zeros((2, 3))})  # no ids
    with pytest.raises(DamagedFileError, match="KeyError"):
        files.read_kept(tmp_path)


def test_read_json_and_npz(tmp_path: Path) -> None:
    (tmp_path / "grid.json").write_text(json.dumps({"m": 1}))
    assert files.read_json(tmp_path / "grid.json") == {"m": 1}
    with open(tmp_path / "grid.npz", "wb") as f:
        np.savez_compressed(f, a=np.arange(1000))
    assert files.read_npz(tmp_path / "grid.npz")["a"].sum() == 499500
    raw = bytearray((tmp_path / "grid.npz").read_bytes())
    raw[60:70] = b"\0" * 10  # a flipped run inside the compressed member: its CRC or inflate fails as it is read
    (tmp_path / "grid.npz").write_bytes(bytes(raw))
    with pytest.raises(DamagedFileError, match="grid.npz"):
        files.read_npz(tmp_path / "grid.npz")
