"""Checkpoints: atomic writes, keep-last-K, `latest`, partial/corrupt detection, state (de)serialisation."""

import pytest
import torch
from accelerate import Accelerator

import _toy  # noqa: F401
from hwlm.training.checkpoint import (
    CheckpointError,
    find_latest_checkpoint,
    load_state_tensors,
    resolve_checkpoint,
    save_checkpoint,
    state_tensors,
    validate_checkpoint,
)


def test_crash_during_a_write_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch):
    acc = Accelerator(cpu=True)
    acc.prepare(torch.nn.Linear(3, 3))
    for step in (1, 2, 3):
        save_checkpoint(acc, tmp_path, step, {"epoch": 0}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000002", "step_00000003"]

    def crash(*args, **kwargs):
        tmp = tmp_path / "checkpoints" / ".tmp-step_00000004"
        tmp.mkdir(exist_ok=True)
        (tmp / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(acc, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(acc, tmp_path, 4, {"epoch": 0}, keep_last=2)
    latest = resolve_checkpoint("latest", tmp_path)
    assert latest.name == "step_00000003" and validate_checkpoint(latest)["step"] == 3
    with pytest.raises(CheckpointError, match="is partial"):
        validate_checkpoint(tmp_path / "checkpoints" / ".tmp-step_00000004")
    assert find_latest_checkpoint(tmp_path / "nowhere") is None


def test_recurrent_state_round_trips_through_plain_tensors():
    from hwlm import RecurrentState

    state = RecurrentState([(torch.randn(2, 4), torch.randn(2, 4)), (torch.randn(2, 4), torch.randn(2, 4))], 7)
    saved = [t.clone() for t in state_tensors(state)]
    fresh = RecurrentState([(torch.zeros(2, 4), torch.zeros(2, 4)) for _ in range(2)])
    restored = load_state_tensors(fresh, saved)
    assert all(torch.equal(a, b) for a, b in zip(state_tensors(restored), state_tensors(state)))
    with pytest.raises(CheckpointError, match="does not match the model's state layout"):
        load_state_tensors(RecurrentState([(torch.zeros(3, 4),)]), saved)
