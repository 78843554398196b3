"""Bad input to the models fails early with a ValueError that names the problem and the fix."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hwlm  # noqa: F401  (registers the model types)
from hwlm import RecurrentState
from test_models import VOCAB, make_model, random_ids


@pytest.mark.parametrize(
    "model_type, kwargs, message",
    [
        ("hwlm_rnn", {"cell_type": "lstm"}, r"`cell_type` must be one of 'tanh', 'relu', 'gru'; got 'lstm'"),
        ("hwlm_lstm", {"hidden_size": 0}, r"`hidden_size` must be a positive integer, got 0"),
        ("hwlm_lstm", {"num_hidden_layers": -2}, r"`num_hidden_layers` must be a positive integer, got -2"),
        ("hwlm_lstm", {"vocab_size": 2.5}, r"`vocab_size` must be a positive integer, got 2.5 \(float\)"),
        ("hwlm_lstm", {"embedding_size": 0}, r"`embedding_size` must be a positive integer"),
        ("hwlm_lstm", {"weight_dropout": 1.0}, r"`weight_dropout` must be a dropout probability in \[0, 1\), got 1.0"),
        ("hwlm_rnn", {"input_dropout": -0.1}, r"`input_dropout` must be a dropout probability"),
        ("hwlm_transformer", {"hidden_size": 30, "num_attention_heads": 4},
         r"`num_attention_heads` \(4\) must divide `hidden_size` \(30\); pick a head count such as 1, 2, 3, 5"),
        ("hwlm_transformer", {"attention_dropout": 1.5}, r"`attention_dropout` must be a dropout probability"),
        ("hwlm_transformer", {"position_embedding_type": "rotary"}, r"`position_embedding_type` must be one of"),
        ("hwlm_transformer", {"max_position_embeddings": 0}, r"`max_position_embeddings` must be a positive integer"),
        ("hwlm_lstm", {"vocab_size": 10, "pad_token_id": 10}, r"`pad_token_id` must be a token id in \[0, vocab_size=10\)"),
        ("hwlm_lstm", {"adaptive_softmax_cutoffs": [50, 20]}, r"`adaptive_softmax_cutoffs` must be .* strictly increasing"),
        ("hwlm_lstm", {"adaptive_softmax_cutoffs": [20], "tie_word_embeddings": True},
         r"`tie_word_embeddings=True` cannot be combined with `adaptive_softmax_cutoffs`"),
    ],
)
def test_bad_config_values_raise_value_error_naming_field_and_value(model_type, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoConfig.for_model(model_type, **{"vocab_size": VOCAB, **kwargs})


def test_config_is_keyword_only():
    with pytest.raises(ValueError, match="accepts only keyword arguments"):
        hwlm.HwlmLstmConfig(100)


@pytest.mark.parametrize("name", ["gru", "lstm", "transformer"])
def test_token_ids_outside_the_vocabulary(name):
    model = make_model(name)
    ids = random_ids()
    ids[1, 3] = VOCAB + 4
    with pytest.raises(ValueError, match=rf"token id {VOCAB + 4}, outside \[0, vocab_size={VOCAB}\).*resize_token_embeddings"):
        model(input_ids=ids)
    ids[1, 3] = -1
    with pytest.raises(ValueError, match=r"token id -1"):
        model(input_ids=ids)


def test_sequence_longer_than_max_position_embeddings():
    model = make_model("transformer")  # max_position_embeddings=40
    with pytest.raises(ValueError, match=r"Sequence of 41 tokens is longer than max_position_embeddings=40.*sliding window"):
        model(input_ids=random_ids(time=41))
    with pytest.raises(ValueError, match=r"longer than max_position_embeddings=40"):
        model.generate(random_ids(time=30), max_new_tokens=20, do_sample=False, eos_token_id=None)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm"])
def test_state_of_the_wrong_shape(name):
    model = make_model(name)
    state = model(input_ids=random_ids(batch=3)).cache
    with pytest.raises(ValueError, match=r"`cache` does not fit this model: expected a RecurrentState with 2 layers"):
        model(input_ids=random_ids(batch=2), cache=state)  # batch size changed
    with pytest.raises(ValueError, match=r"cache=None` to start from zeros"):
        model(input_ids=random_ids(batch=3), cache=RecurrentState(list(state)[:1]))  # a layer missing
    with pytest.raises(ValueError, match=r"got tuple"):
        model(input_ids=random_ids(batch=3), cache=tuple(state))


def test_mask_with_gaps_is_rejected_by_recurrent_models():
    model = make_model("lstm")
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 4] = 0
    with pytest.raises(ValueError, match=r"one contiguous run of real tokens per row"):
        model(input_ids=random_ids(), attention_mask=mask)


def test_input_ids_and_inputs_embeds_are_exclusive():
    model = make_model("lstm")
    ids = random_ids()
    with pytest.raises(ValueError, match=r"exactly one of `input_ids` or `inputs_embeds`"):
        model(input_ids=ids, inputs_embeds=model.get_input_embeddings()(ids))


def test_folder_whose_config_asks_for_more_layers_than_its_weights(tmp_path):
    make_model("lstm").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match its config: 4 weight\(s\) .* missing: model.layers.2"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_folder_whose_weights_have_other_shapes_than_its_config(tmp_path):
    make_model("transformer").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RuntimeError, match=r"ignore_mismatched_sizes"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "name, override, message",
    [
        ("lstm", {"hidden_dropout": 7.0}, r"`hidden_dropout` must be a dropout probability in \[0, 1\), got 7.0"),
        ("gru", {"cell_type": "lstm"}, r"`cell_type` must be one of 'tanh', 'relu', 'gru'; got 'lstm'"),
        ("transformer", {"num_attention_heads": 5}, r"`num_attention_heads` \(5\) must divide `hidden_size`"),
    ],
)
def test_from_pretrained_overrides_are_checked_like_the_config(name, override, message, tmp_path):
    # transformers applies from_pretrained(path, field=value) to the built config, after the config's own checks.
    make_model(name).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, **override)
    assert all(getattr(config, k) == v for k, v in override.items())  # the override did reach the config unchecked
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_pretrained(tmp_path, **override)
    with pytest.raises(ValueError, match=message):
        AutoModelForCausalLM.from_config(config)  # a config edited after it was built


def test_memory_length_zero_is_refused_before_any_forward(tmp_path):
    make_model("transformer", position_embedding_type="alibi", memory_length=8).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"`memory_length` must be a positive integer, got 0"):
        AutoModelForCausalLM.from_pretrained(tmp_path, memory_length=0)
