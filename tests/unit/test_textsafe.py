"""`clean_text`: outside text with its control characters shown as escapes and its length capped."""

from __future__ import annotations

import time

from edgecam.devices.errors import DeviceError, DeviceTimeout, JobFailed
from edgecam.textsafe import MAX_TEXT_CHARS, clean_text


def test_control_characters_become_visible_escapes_and_lines_stay() -> None:
    raw = "a\x1b]0;title\x07b\x1b[2Jc\x9b31m\u202eexe\r\x00 line\n\ttab é ✓"
    assert clean_text(raw) == "a\\x1b]0;title\\x07b\\x1b[2Jc\\x9b31m\\u202eexe\\x0d\\x00 line\n\ttab é ✓"


def test_long_text_keeps_its_head_and_tail_and_says_what_was_cut() -> None:
    text = "HEAD" + "A" * 300_000 + "TAIL"
    t0 = time.perf_counter()
    out = clean_text(text, 3000)
    assert time.perf_counter() - t0 < 1.0
    assert out.startswith("HEAD") and out.endswith("TAIL") and "[297,008 characters cut]" in out and len(out) < 3100
    assert clean_text("short", 3000) == "short"


def test_device_errors_are_cleaned_where_they_are_made() -> None:
    for cls in (DeviceError, JobFailed, DeviceTimeout):
        exc = cls("board said: \x1b[2J" + "B" * 100_000)
        assert "\x1b" not in str(exc) and "\\x1b[2J" in str(exc) and len(str(exc)) < MAX_TEXT_CHARS + 100
    assert str(DeviceTimeout("x\x07")) == "x\\x07"  # once, not escaped twice
