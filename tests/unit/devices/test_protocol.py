"""The session's framing (devices/protocol.py): round trips, and every malformed frame refused with a clear
FrameError while the stream stays in step (the next frame reads fine)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest

from edgecam.devices.protocol import DTYPES, FIXED, MAGIC, FrameError, encode_frame, frame_size, read_frame, stream_readinto


def _bytes(header: dict, arrays: dict | None = None) -> bytes:
    chunks, size = encode_frame(header, arrays)
    data = b"".join(bytes(c) for c in chunks)
    assert len(data) == size == frame_size(header, arrays)
    return data


def _raw(header: dict, payload: bytes, declared: int | None = None, magic: bytes = MAGIC) -> bytes:
    text = json.dumps(header).encode()
    return FIXED.pack(magic, len(text), len(payload) if declared is None else declared) + text + payload


def _reader(data: bytes):
    return stream_readinto(io.BytesIO(data))


def test_every_allowed_dtype_round_trips() -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "float32": rng.normal(size=(2, 3, 4)).astype(np.float32), "float64": rng.normal(size=(5,)),
        "int32": np.arange(-3, 3, dtype=np.int32).reshape(2, 3), "int64": np.array([2**40, -1]), "uint8": np.arange(7, dtype=np.uint8),
        "bool": np.array([[True, False]]), "empty": np.zeros((0, 10), np.float32), "scalar": np.float32(1.5),
        "big_endian": np.arange(4, dtype=">f4"), "strided": np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2],
    }
    read = _reader(_bytes({"op": "forward", "id": 7, "params": {"x": [1, None]}}, arrays))
    header, out, size = read_frame(read)
    assert header["op"] == "forward" and header["id"] == 7 and header["params"] == {"x": [1, None]}
    assert size == frame_size({"op": "forward", "id": 7, "params": {"x": [1, None]}}, arrays)
    for k, v in arrays.items():
        assert np.array_equal(out[k], v) and out[k].shape == np.shape(v)
    assert out["big_endian"].dtype == np.float32 and out["float32"].flags.writeable
    assert set(DTYPES) == {"float32", "float64", "int32", "int64", "uint8", "bool"}


@pytest.mark.parametrize("bad", [np.array([{"a": 1}], dtype=object), np.zeros(3, np.float16), np.zeros(2, np.complex64), np.array(["s"])])
def test_nothing_else_can_be_sent(bad: np.ndarray) -> None:
    with pytest.raises(FrameError, match="a frame carries only"):
        encode_frame({"op": "x", "id": 1}, {"a": bad})


GOOD = {"op": "ping", "id": 99, "params": {}}


@pytest.mark.parametrize(
    ("frame", "message", "rid"),
    [
        (_raw({"op": "f", "id": 3, "arrays": [{"name": "x", "dtype": "float32", "shape": [4]}]}, b"\0" * 12), "length mismatch: the fixed header declares 12 payload bytes, its arrays (dtype x shape) need 16", 3),
        (_raw({"op": "f", "id": 4, "arrays": [{"name": "x", "dtype": "object", "shape": [2]}]}, b"\0" * 16), "dtype 'object' is not allowed", 4),
        (_raw({"op": "f", "id": 5, "arrays": [{"name": "x", "dtype": "float32", "shape": [-1]}]}, b""), "non-negative integers", 5),
        (_raw({"op": "f", "id": 6, "arrays": [{"name": "x", "dtype": "uint8", "shape": [2]}, {"name": "x", "dtype": "uint8", "shape": [2]}]}, b"abcd"), "appears twice", 6),
        (FIXED.pack(MAGIC, 5, 3) + b"{nope" + b"abc", "bad frame header", None),
        (_raw({"op": "f", "id": 8, "arrays": [{"name": "x", "dtype": "uint8", "shape": [4096]}]}, b"\1" * 4096), "oversize frame refused: frame of", None),
        (FIXED.pack(MAGIC, 2 * 1500, 0) + b"[" * 1500 + b"]" * 1500, "bad frame header: JSON nested deeper than 64 levels", None),  # not a RecursionError
    ],
)
def test_malformed_frames_are_refused_and_the_stream_stays_in_step(frame: bytes, message: str, rid: object) -> None:
    read = _reader(frame + _bytes(GOOD))
    with pytest.raises(FrameError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_frame(read, max_frame_bytes=4000)
    assert info.value.request_id == rid and not info.value.fatal
    header, arrays, _ = read_frame(read, max_frame_bytes=4000)  # the next frame is read whole
    assert header["id"] == 99 and arrays == {}
    with pytest.raises(EOFError, match="before a frame"):
        read_frame(read)


def test_a_bad_magic_is_fatal_and_a_truncated_frame_is_eof() -> None:
    with pytest.raises(FrameError, match="bad frame magic") as info:
        read_frame(_reader(_raw(GOOD, b"", magic=b"PKL\x80")))
    assert info.value.fatal
    data = _bytes({"op": "f", "id": 1}, {"x": np.ones(100, np.float32)})
    with pytest.raises(EOFError, match="inside a frame"):
        read_frame(_reader(data[:-10]))


def test_the_fixed_header_is_magic_and_big_endian_lengths() -> None:
    data = _bytes({"op": "f", "id": 1}, {"x": np.ones(3, np.int64)})
    magic, head_len, payload = struct.unpack(">4sIQ", data[:16])
    assert magic == MAGIC and payload == 24 and len(data) == 16 + head_len + payload
    assert json.loads(data[16 : 16 + head_len])["arrays"] == [{"name": "x", "dtype": "int64", "shape": [3]}]
