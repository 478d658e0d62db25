"""A hostile device's Python, for the adversarial tests: given to a device as its `python`, it runs the real edgecam
agent with the interpreter that runs this file, then tampers with what the agent answers, as a broken or
malicious board would (`EDGECAM_HOSTILE` names how). Everything the host reads goes through the same code as
on SSH and adb: result.json and outputs.npz in the job folder, the probe's line, the session's frames.

    EDGECAM_HOSTILE=probe-escapes   the probe's facts carry terminal control sequences
    EDGECAM_HOSTILE=probe-deep      the probe answers 300,000 nested brackets
    EDGECAM_HOSTILE=result-deep     a job's result.json is 200,000 nested brackets
    EDGECAM_HOSTILE=outputs-bomb    a job's outputs.npz is the compressed file EDGECAM_HOSTILE_BOMB (1 GiB of zeros inside)
    EDGECAM_HOSTILE=result-sparse   a job's result.json is a sparse 1 GiB file (the test board's tar then sends a sparse member)
    EDGECAM_HOSTILE=serve-noarrays  every session answer says ok and carries no arrays
    EDGECAM_HOSTILE=serve-deep      every session answer's header is 200,000 nested brackets (under the 1 MiB cap)
    EDGECAM_HOSTILE=serve-errtext   every session answer fails with an error of escapes, markup and 300,000 characters
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

MODE = os.environ.get("EDGECAM_HOSTILE", "")
ESCAPES = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mRED\x1b[0m \x9b31m"
FIXED = struct.Struct(">4sIQ")  # the frame's fixed header (edgecam.devices.protocol)
MAGIC = b"ECF1"


def _agent(argv: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], **kw)  # type: ignore[call-overload]


def _read(stream: object, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _frame(header: bytes, payload: bytes = b"") -> bytes:
    return FIXED.pack(MAGIC, len(header), len(payload)) + header + payload


def _serve(argv: list[str]) -> int:
    """The real agent's session, its answers rewritten on the way out (the hello and the close answer pass)."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE)  # stdin: ours, the host's requests
    out = sys.stdout.buffer
    try:
        while True:
            fixed = _read(proc.stdout, FIXED.size)
            _, head_len, payload_len = FIXED.unpack(fixed)
            head = _read(proc.stdout, head_len)
            payload = _read(proc.stdout, payload_len)
            header = json.loads(head)
            if header.get("op") != "result" or header.get("id") == -1:
                out.write(fixed + head + payload)
            elif MODE == "serve-noarrays":
                out.write(_frame(json.dumps({"op": "result", "id": header["id"], "ok": True, "arrays": []}).encode()))
            elif MODE == "serve-deep":
                out.write(_frame(('{"op":"result","id":%d,"ok":true,"x":' % header["id"] + "[" * 200_000 + "]" * 200_000 + "}").encode()))
            elif MODE == "serve-errtext":
                error = ESCAPES + " [bold]x[/bold] [/] <script>alert(1)</script> " + "A" * 300_000
                out.write(_frame(json.dumps({"op": "result", "id": header["id"], "ok": False, "error": error, "arrays": []}).encode()))
            else:
                out.write(fixed + head + payload)
            out.flush()
    except EOFError:
        return proc.wait()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "probe" and MODE == "probe-deep":
        print("[" * 300_000)
        return 0
    if command == "probe" and MODE == "probe-escapes":
        res = _agent(argv, capture_output=True, text=True)
        facts = json.loads(res.stdout.strip().splitlines()[-1])
        facts.update(cpu=ESCAPES + " EVIL CPU", kernel="\x1b[8mhidden\x1b[0m", os="Debian\u202egnp.exe")
        print(json.dumps(facts))
        return res.returncode
    if command == "serve" and MODE.startswith("serve-"):
        return _serve(argv)
    rc = _agent(argv).returncode
    if command == "run" and rc == 0:
        job = argv[2]
        if MODE == "result-deep":
            with open(os.path.join(job, "result.json"), "w") as f:
                f.write("[" * 200_000 + "]" * 200_000)
        elif MODE == "result-sparse":
            with open(os.path.join(job, "result.json"), "r+b") as f:
                f.truncate(1 << 30)
            open(os.path.join(job, ".hostile-sparse"), "w").close()  # the board's tar wrapper: sparse members here
        elif MODE == "outputs-bomb":
            shutil.copyfile(os.environ["EDGECAM_HOSTILE_BOMB"], os.path.join(job, "outputs.npz"))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
