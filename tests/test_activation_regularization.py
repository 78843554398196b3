"""AWD-LSTM's activation regularisation (AR) and temporal activation regularisation (TAR) on the recurrent models."""

import pytest
import torch
from transformers import AutoConfig

from test_models import make_model, random_ids

ALPHA, BETA = 2.0, 1.0


def last_layer_output(model, ids):
    """The last recurrent layer's raw output (B, T, H), read with a forward hook."""
    seen = {}
    hook = model.model.layers[-1].register_forward_hook(lambda m, args, out: seen.update(out=out[0]))
    model(input_ids=ids)
    hook.remove()
    return seen["out"]


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn_tanh"])
def test_penalty_is_alpha_mean_square_plus_beta_mean_square_step(name):
    model = make_model(name, activation_regularization=ALPHA, temporal_activation_regularization=BETA).train()
    plain = make_model(name).train()  # same seed, same weights, no penalty
    ids = random_ids(batch=3, time=7)
    out = last_layer_output(model, ids)  # no dropout: the dropped output is the raw output
    expected = ALPHA * out.pow(2).mean() + BETA * (out[:, 1:] - out[:, :-1]).pow(2).mean()
    got = model(input_ids=ids, labels=ids).loss - plain(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(got, expected)
    assert model.model(input_ids=ids).activation_penalty is not None


def test_no_penalty_in_eval_mode_or_when_off():
    ids = random_ids()
    model = make_model("lstm", activation_regularization=ALPHA, temporal_activation_regularization=BETA).eval()
    assert model.model(input_ids=ids).activation_penalty is None
    torch.testing.assert_close(model(input_ids=ids, labels=ids).loss, make_model("lstm")(input_ids=ids, labels=ids).loss)
    assert make_model("lstm").train().model(input_ids=ids).activation_penalty is None


def test_penalty_ignores_padding():
    model = make_model("lstm", activation_regularization=ALPHA, temporal_activation_regularization=BETA).train()
    ids = random_ids(batch=1, time=6)
    alone = model.model(input_ids=ids).activation_penalty
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)  # three pads on the left
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 6)], dim=1).long()
    torch.testing.assert_close(model.model(input_ids=padded, attention_mask=mask).activation_penalty, alone)


def test_gradient_accumulation_adds_one_penalty_per_step():
    model = make_model("lstm", activation_regularization=ALPHA, temporal_activation_regularization=BETA).train()
    ids = random_ids(batch=4, time=6)
    targets = random_ids(batch=4, time=6, seed=5)
    whole = model(input_ids=ids, shift_labels=targets).loss
    total = targets.numel()
    halves = sum(
        model(input_ids=ids[rows], shift_labels=targets[rows], num_items_in_batch=total).loss
        for rows in (slice(0, 2), slice(2, 4))
    )
    torch.testing.assert_close(halves, whole)


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="`temporal_activation_regularization` must be a number >= 0"):
        AutoConfig.for_model("hwlm_lstm", temporal_activation_regularization=-1.0)
