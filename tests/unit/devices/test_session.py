"""The device session the explain stage uses: "forward" requests to one persistent agent, chunked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import ort_outputs

from edgecam.devices.session import DeviceSession
from edgecam.devices.local import LocalDevice


def test_device_session_matches_in_process_runtime_and_chunks(trained_tinycnn, tmp_path: Path) -> None:
    art = trained_tinycnn.artifacts["int8"]
    x = trained_tinycnn.data.test_x[:12]
    session = DeviceSession(LocalDevice(workdir=str(tmp_path / "dev")), art, {"runtime": "onnxruntime", "runtime_options": {"threads": 1}}, max_inputs=5, outputs=None)
    out = session(x)
    ref = ort_outputs(art, x)
    assert set(out) == {"logits", "features"}
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=1e-6)
    np.testing.assert_allclose(out["features"], ref["features"], atol=1e-6)
    assert session.calls == 3 and session.inputs == 12  # 5 + 5 + 2

    logits_only = DeviceSession(session.device, art, {"runtime": "onnxruntime", "runtime_options": {"threads": 1}})
    assert set(logits_only(x)) == {"logits"}  # the default: what masked-input CAMs need, nothing more
