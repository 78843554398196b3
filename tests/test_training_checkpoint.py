"""Checkpoints: atomic writes, keep-last-K, `latest`, partial/corrupt detection, state (de)serialisation."""

import pytest
import torch
from accelerate import Accelerator

import _toy  # noqa: F401
from hwlm.training.checkpoint import (
    CheckpointError,
    find_latest_checkpoint,
    load_carried,
    resolve_checkpoint,
    save_carried,
    save_checkpoint,
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


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer_memory"])
def test_carried_state_round_trips_through_safetensors(name, tmp_path):
    """Whatever state a model carries is saved as plain tensors + its pytree structure and rebuilt as itself."""
    from test_models import make_model, random_ids

    model = make_model(name)
    carried = model(input_ids=random_ids(batch=2, time=9), use_cache=True).cache
    save_carried(tmp_path, 1, carried)
    assert load_carried(tmp_path, 0) is None  # another rank's file is not this rank's state
    restored = load_carried(tmp_path, 1)
    assert type(restored) is type(carried) and restored.get_seq_length() == 9
    more = random_ids(batch=2, time=4, seed=3)
    torch.testing.assert_close(model(input_ids=more, cache=restored).logits, model(input_ids=more, cache=carried).logits)


def test_carried_state_without_structure_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"0": torch.zeros(2, 4)}, str(tmp_path / "carried_rank0.safetensors"))
    with pytest.raises(CheckpointError, match="holds no pytree structure"):
        load_carried(tmp_path, 0)


class _Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, like tie_word_embeddings


def test_saving_tied_weights_is_quiet_but_other_shared_tensors_still_warn(tmp_path, caplog):
    import logging

    from hwlm.training.checkpoint import quiet_tied_weights, tied_parameter_names

    model = _Tied()
    assert tied_parameter_names(model) == {"embed.weight", "head.weight"}
    acc = Accelerator(cpu=True)
    acc.prepare(model)
    with caplog.at_level(logging.WARNING):
        save_checkpoint(acc, tmp_path / "loud", 1, {"epoch": 0}, keep_last=2)
    assert "Removed shared tensor {'head.weight'}" in caplog.text  # accelerate warns on every checkpoint
    caplog.clear()
    with caplog.at_level(logging.WARNING), quiet_tied_weights(model):
        save_checkpoint(acc, tmp_path / "quiet", 1, {"epoch": 0}, keep_last=2)
        # a tensor shared by accident (not a tied parameter of the model) is still reported
        logging.getLogger("accelerate.utils.other").warning("Removed shared tensor {'buffer_copy'} while saving.")
    assert "head.weight" not in caplog.text and "{'buffer_copy'}" in caplog.text
    assert validate_checkpoint(tmp_path / "quiet" / "checkpoints" / "step_00000001")["step"] == 1
