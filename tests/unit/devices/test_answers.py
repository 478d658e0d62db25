"""The checks on everything a device sends (`edgecam.devices.answers`): JSON size and depth, npz members checked
from their headers before their data, pulled trees measured where they landed, the arrays an answer must hold."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecam.devices.answers import BadAnswer, answer_bound, check_pulled, expect_arrays, load_npz, output_row_bytes, parse_json, read_json_file
from edgecam.devices.errors import JobFailed
from edgecam.devices.protocol import check_json_depth


def test_json_within_its_caps_parses_and_beyond_them_is_a_bad_answer_not_a_recursion_error() -> None:
    assert parse_json('{"a": [[1, 2], {"b": "[[[[[[[["}]}', "result") == {"a": [[1, 2], {"b": "[[[[[[[["}]}
    assert parse_json(json.dumps({"s": '\\"[' * 1000}), "result")["s"] == '\\"[' * 1000  # brackets and escaped quotes inside strings
    with pytest.raises(BadAnswer, match="result is not usable JSON .*nested deeper than 64 levels"):
        parse_json("[" * 200_000 + "]" * 200_000, "result", max_bytes=1 << 20)
    with pytest.raises(BadAnswer, match="over the cap of 100"):
        parse_json("[" + "1," * 100 + "1]", "result", max_bytes=100)
    with pytest.raises(BadAnswer, match="not usable JSON"):
        parse_json(b"\xff\xfe", "result")
    assert issubclass(BadAnswer, JobFailed)  # a bad answer fails its job, never the run
    check_json_depth("[" * 64 + "]" * 64)
    with pytest.raises(ValueError):
        check_json_depth("[" * 65 + "]" * 65)


def test_a_json_file_is_measured_before_it_is_read(tmp_path: Path) -> None:
    sparse = tmp_path / "result.json"
    sparse.write_text('{"ok": true}')
    assert read_json_file(sparse, "result.json") == {"ok": True}
    with open(sparse, "r+b") as f:
        f.truncate(1 << 30)  # 1 GiB apparent, nothing on disk
    with pytest.raises(BadAnswer, match="1,073,741,824 bytes, over the cap"):
        read_json_file(sparse, "result.json")
    (tmp_path / "link.json").symlink_to(sparse)
    with pytest.raises(BadAnswer, match="not a regular file"):
        read_json_file(tmp_path / "link.json", "result.json")


def _npz(path: Path, shape: tuple[int, ...], dtype: str = "<f4", data: bytes | None = None, compress: bool = True) -> Path:
    """An npz with one member `logits.npy` whose header says `shape` / `dtype` (its data: zeros, or `data`)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z, z.open("logits.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        if data is None:
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            for i in range(0, n, 1 << 20):
                f.write(bytes(min(1 << 20, n - i)))
        else:
            f.write(data)
    return path


def test_npz_members_are_checked_from_their_headers_before_a_byte_is_decompressed(tmp_path: Path) -> None:
    ok = tmp_path / "ok.npz"
    np.savez(ok, logits=np.arange(6, dtype=np.float32).reshape(2, 3), fortran=np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    got = load_npz(ok, "outputs.npz", 1 << 20)
    np.testing.assert_array_equal(got["logits"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(got["fortran"], np.arange(6.0).reshape(2, 3))
    bomb = _npz(tmp_path / "bomb.npz", (1, 64 << 20))  # 256 MiB of zeros in about 250 KB
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(BadAnswer, match=r"declares \(1, 67108864\) float32 .*at most 1,048,576 bytes of arrays; refused"):
        load_npz(bomb, "outputs.npz", 1 << 20)
    with pytest.raises(BadAnswer, match="dtype object"):
        load_npz(_npz(tmp_path / "obj.npz", (2,), "|O", data=b"\0" * 16), "outputs.npz", 1 << 20)
    with pytest.raises(BadAnswer, match="ends after 8 of 16 bytes"):
        load_npz(_npz(tmp_path / "short.npz", (4,), data=b"\0" * 8, compress=False), "outputs.npz", 1 << 20)
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("../escape.txt", b"x")
    with pytest.raises(BadAnswer, match="unexpected member"):
        load_npz(tmp_path / "odd.npz", "outputs.npz", 1 << 20)
    (tmp_path / "trunc.npz").write_bytes(ok.read_bytes()[:100])
    with pytest.raises(BadAnswer, match="unreadable"):
        load_npz(tmp_path / "trunc.npz", "outputs.npz", 1 << 20)


def test_a_pulled_tree_is_measured_where_it_landed(tmp_path: Path) -> None:
    tree = tmp_path / "back"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.bin").write_bytes(b"x" * 1000)
    (tree / "b.bin").write_bytes(b"y" * 1000)
    assert check_pulled(tree, 2000, "job") == 2000
    with pytest.raises(BadAnswer, match="more than 1,999 bytes"):
        check_pulled(tree, 1999, "job")
    with open(tree / "b.bin", "r+b") as f:
        f.truncate(1 << 30)  # sparse: counted at its apparent size, as reading it would cost
    with pytest.raises(BadAnswer, match="more than"):
        check_pulled(tree, 1 << 20, "job")
    os.unlink(tree / "b.bin")
    os.mkfifo(tree / "fifo")
    with pytest.raises(BadAnswer, match="'fifo' is not a regular file"):
        check_pulled(tree, 1 << 20, "job")


def test_answers_hold_the_arrays_the_op_needs_within_the_bound_the_artifact_declares(tmp_path: Path) -> None:
    assert expect_arrays({"logits": np.zeros((2, 10))}, ["logits"], "forward")["logits"].shape == (2, 10)
    with pytest.raises(BadAnswer, match=r"perturb request 3: the answer holds \[\], not \['logits'\]"):
        expect_arrays({}, ["logits"], "perturb request 3")
    with pytest.raises(BadAnswer, match="expected a numeric array"):
        expect_arrays({"logits": np.array("text")}, ["logits"], "forward")
    (tmp_path / "manifest.json").write_text(json.dumps({"output_shapes": {"logits": [1, 10], "features": ["N", 64, 7, 7], "dyn": [1, "h"]}}))
    rows = output_row_bytes(tmp_path)
    assert rows == {"logits": 80, "features": 8 * 64 * 49}
    assert answer_bound(rows, 4, ["logits"], fallback=-1) == 4 * 80 + (1 << 20)
    assert answer_bound(rows, 4, ["dyn"], fallback=-1) == -1  # an output of unknown size: the caller's own cap
    assert answer_bound(rows, 4, [], fallback=-1) == 1 << 20
    assert output_row_bytes(tmp_path / "missing") == {}
