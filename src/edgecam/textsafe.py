"""Text from outside (a device's errors, stderr and probe facts) made safe to print and store, once, where it
enters the host (issue 36, audit 2026-12-05 class 3).

A board that answers `ESC]0;title BEL ESC[2J` in an error message would clear the user's terminal, retitle the
window or hide text, and the same bytes would sit in failed.csv; a 300,000-character error line costs rich's
highlighter minutes (its cost grows with the square of the line). `clean_text` makes every control character
visible as an escape (`\\x1b`, `\\u202e`: C0 and C1 controls, DEL, bidirectional overrides and zero-width
characters; newlines and tabs kept) and caps the length, keeping the head and the tail (where a traceback's
cause is).
"""

from __future__ import annotations

import re

#: the most characters of outside text one message keeps (a traceback tail fits)
MAX_TEXT_CHARS = 6000
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _visible(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(text: object, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as a str with every control character shown as an escape and at most about `limit` characters
    (two thirds from the head, one third from the tail, the cut said in between)."""
    s = _CONTROL.sub(_visible, str(text))
    if len(s) > limit:
        head, tail = (2 * limit) // 3, limit // 3
        s = f"{s[:head]}\n... [{len(s) - head - tail:,} characters cut] ...\n{s[-tail:]}"
    return s
