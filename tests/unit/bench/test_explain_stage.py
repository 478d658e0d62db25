"""The explain stage's ETA (`StageEta`) and torch thread setting, without a device or a model."""

from __future__ import annotations

import pytest
import torch

from edgecam.bench.explain_stage import StageEta, _torch_threads


def _eta(sizes: list[int]) -> tuple[StageEta, list[str]]:
    logged: list[str] = []
    return StageEta("m", 2, sizes, logged.append), logged


def test_first_shard_estimate_leaves_out_the_unoverlapped_wait_for_the_device() -> None:
    """Shard 1: 10 s, of which 6 s waiting for the device's start and outputs (device 7 s), 4 s host work. Later
    shards overlap the two, so each costs max(4, 7) = 7 s, not 10 s."""
    eta, logged = _eta([32, 32, 32, 32])
    eta.done(0, 10.0, False, wait_s=6.0, device_s=7.0)
    assert eta.estimates[0]["stage_s"] == pytest.approx(10.0 + 3 * 7.0)
    assert eta.estimates[0]["per_image_variant_s"] == pytest.approx(7.0 / 32 / 2)
    assert "to go for 96 images" in logged[0]


def test_host_bound_first_shard_and_the_steady_second_shard() -> None:
    eta, _ = _eta([32, 32, 32, 16])
    eta.done(0, 12.0, False, wait_s=2.0, device_s=3.0)  # host-bound: 10 s of host work per shard
    eta.done(1, 9.0, False, wait_s=0.5, device_s=3.0)  # the second shard's whole time is the steady state
    assert eta.estimates[0]["stage_s"] == pytest.approx(12.0 + 10.0 * 80 / 32)
    assert eta.estimates[1]["stage_s"] == pytest.approx(21.0 + 9.0 * 48 / 32)
    eta.done(2, 9.0, False)
    assert len(eta.estimates) == 2  # estimated twice, then quiet


def test_resumed_shards_count_as_elapsed_but_are_not_a_rate() -> None:
    eta, _ = _eta([10, 10, 10])
    eta.done(0, 0.2, True)
    assert eta.estimates == []
    eta.done(1, 5.0, False)  # no device figures (nothing prefetched): the shard's own time
    assert eta.estimates[0]["stage_s"] == pytest.approx(0.2 + 5.0 + 5.0)


def test_torch_threads_set_inside_and_restored() -> None:
    before = torch.get_num_threads()
    with _torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with _torch_threads(None):
        assert torch.get_num_threads() == before
