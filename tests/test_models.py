"""One battery of checks run over every hwlm model family (tiny configs, CPU, offline)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

import hwlm
from hwlm import RecurrentState

VOCAB = 60

# name → (model_type, config overrides). Every family, plus the variants whose code paths differ.
FAMILIES = {
    "rnn_tanh": ("hwlm_rnn", {"cell_type": "tanh"}),
    "rnn_relu": ("hwlm_rnn", {"cell_type": "relu", "initializer_range": 0.05}),
    "gru": ("hwlm_rnn", {"cell_type": "gru"}),
    "lstm": ("hwlm_lstm", {}),
    "lstm_tied_projection": ("hwlm_lstm", {"embedding_size": 12, "tie_word_embeddings": True}),
    "transformer": ("hwlm_transformer", {"num_attention_heads": 4, "max_position_embeddings": 40}),
    "transformer_sinusoidal": (
        "hwlm_transformer",
        {"num_attention_heads": 2, "max_position_embeddings": 40, "position_embedding_type": "sinusoidal"},
    ),
    "transformer_memory": (
        "hwlm_transformer",
        {"num_attention_heads": 2, "position_embedding_type": "alibi", "memory_length": 5},
    ),
}
RECURRENT = [name for name, (model_type, _) in FAMILIES.items() if model_type != "hwlm_transformer"]
# AWD-LSTM regularisers (recurrent) / dropouts (Transformer), all on: used where training-mode behaviour matters.
DROPOUTS = {
    "hwlm_rnn": dict(embedding_dropout=0.1, input_dropout=0.2, hidden_dropout=0.2, output_dropout=0.2, weight_dropout=0.3),
    "hwlm_lstm": dict(embedding_dropout=0.1, input_dropout=0.2, hidden_dropout=0.2, output_dropout=0.2, weight_dropout=0.3),
    "hwlm_transformer": dict(embedding_dropout=0.1, hidden_dropout=0.1, attention_dropout=0.1),
}


def make_config(name: str, **overrides):
    model_type, extra = FAMILIES[name]
    kwargs = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, pad_token_id=0, eos_token_id=1)
    kwargs.update(extra)
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def make_model(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(make_config(name, **overrides)).eval()


def random_ids(batch=3, time=9, seed=1):
    return torch.randint(2, VOCAB, (batch, time), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param


def test_output_shapes_and_cache_type(family):
    model = make_model(family)
    ids = random_ids()
    out = model(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (3, 9, VOCAB)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.cache is not None
    if family in RECURRENT:
        assert isinstance(out.cache, RecurrentState) and len(out.cache) == 2
        assert out.cache.get_seq_length() == 9
    assert model(input_ids=ids, use_cache=False).cache is None


def test_loss_is_hand_shifted_cross_entropy_and_ignores_minus_100(family):
    model = make_model(family)
    ids = random_ids()
    logits = model(input_ids=ids).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(model(input_ids=ids, labels=ids).loss, expected)

    labels = ids.clone()
    labels[:, 4:7] = -100
    kept = labels[:, 1:] != -100
    expected = F.cross_entropy(logits[:, :-1][kept], labels[:, 1:][kept])
    torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, expected)

    # shift_labels are already aligned: target of position t is shift_labels[:, t]
    targets = random_ids(seed=5)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    torch.testing.assert_close(model(input_ids=ids, shift_labels=targets).loss, expected)
    summed = model(input_ids=ids, shift_labels=targets, num_items_in_batch=1).loss
    torch.testing.assert_close(summed, expected * targets.numel())


def test_causality_future_tokens_never_change_past_logits(family):
    model = make_model(family)
    ids = random_ids(time=12)
    base = model(input_ids=ids).logits
    for t in (0, 5, 10):
        changed = ids.clone()
        changed[:, t + 1 :] = random_ids(time=12, seed=7)[:, t + 1 :]
        logits = model(input_ids=changed).logits
        torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1 :], base[:, t + 1 :])


def test_logits_to_keep_and_inputs_embeds(family):
    model = make_model(family)
    ids = random_ids()
    full = model(input_ids=ids).logits
    torch.testing.assert_close(model(input_ids=ids, logits_to_keep=1).logits, full[:, -1:])
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, full)


def test_save_load_round_trip_with_auto_classes(family, tmp_path):
    model = make_model(family)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert type(config) is type(model.config)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    ids = random_ids()
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)


def test_dtype_is_respected_on_load(family, tmp_path):
    make_model(family).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    out = loaded(input_ids=random_ids(), labels=random_ids())
    assert torch.isfinite(out.loss)


def test_tied_weights_are_one_tensor_after_save_and_load(tmp_path):
    for name in ("lstm_tied_projection", "transformer", "gru"):
        tied = name != "gru"
        model = make_model(name, tie_word_embeddings=tied)
        assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied
        model.save_pretrained(tmp_path / name)
        loaded = AutoModelForCausalLM.from_pretrained(tmp_path / name)
        assert (loaded.lm_head.weight is loaded.get_input_embeddings().weight) == tied
        torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)


def test_resize_token_embeddings(family):
    model = make_model(family)
    model.resize_token_embeddings(VOCAB + 7)
    assert model.config.vocab_size == VOCAB + 7
    ids = torch.full((2, 4), VOCAB + 6)
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 4, VOCAB + 7) and torch.isfinite(out.loss)


def test_eval_mode_is_deterministic_even_with_dropout(family):
    model_type = FAMILIES[family][0]
    model = make_model(family, **DROPOUTS[model_type])
    ids = random_ids()
    torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids).logits)
    model.train()
    assert not torch.allclose(model(input_ids=ids).logits, model(input_ids=ids).logits)


def test_every_parameter_gets_a_gradient(family):
    model_type = FAMILIES[family][0]
    model = make_model(family, **DROPOUTS[model_type]).train()
    ids = random_ids(batch=4, time=10)
    model(input_ids=ids, labels=ids).loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_tiny_model_overfits_one_batch(family):
    model = make_model(family, hidden_size=32).train()
    ids = random_ids(batch=2, time=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def naive_greedy(model, ids, attention_mask, new_tokens):
    """Reference decoding: recompute the whole (padded) sequence at every step, no cache."""
    mask = attention_mask.clone()
    for _ in range(new_tokens):
        kwargs = {}
        if not model.carries_state:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return ids


def test_greedy_generate_with_cache_equals_naive_loop(family):
    model = make_model(family, hidden_size=24)
    prompts = random_ids(batch=3, time=6)
    mask = torch.ones_like(prompts)
    expected = naive_greedy(model, prompts, mask, 8)
    got = model.generate(prompts, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert torch.equal(got, expected)


def test_greedy_generate_left_padded_batch_equals_unpadded(family):
    model = make_model(family, hidden_size=24)
    long, short = random_ids(batch=1, time=7, seed=2), random_ids(batch=1, time=4, seed=3)
    padded = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], dim=1)])
    mask = (torch.arange(7) >= torch.tensor([[0], [3]])).long()
    got = model.generate(padded, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
    torch.testing.assert_close(got, naive_greedy(model, padded, mask, 6))
    for row, prompt in enumerate((long, short)):
        alone = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
        assert torch.equal(got[row, -6:], alone[0, -6:]), row


def test_sampling_and_beam_search(family):
    model = make_model(family)
    prompt = random_ids(batch=2, time=4)
    torch.manual_seed(0)
    sampled = model.generate(prompt, max_new_tokens=5, do_sample=True, temperature=0.8, top_k=10, top_p=0.9)
    torch.manual_seed(0)
    again = model.generate(prompt, max_new_tokens=5, do_sample=True, temperature=0.8, top_k=10, top_p=0.9)
    assert sampled.shape == (2, 9) and torch.equal(sampled, again)
    assert int(sampled.max()) < VOCAB
    beams = dict(max_new_tokens=5, num_beams=3, do_sample=False, eos_token_id=None)
    cached = model.generate(prompt, **beams)
    uncached = model.generate(prompt, use_cache=False, **beams)
    assert torch.equal(cached, uncached)  # reorder_cache keeps each beam's state with its beam


@pytest.mark.parametrize("name", RECURRENT)
def test_state_carried_across_windows_equals_one_pass(name):
    model = make_model(name)
    ids = random_ids(time=12)
    whole = model(input_ids=ids)
    first = model(input_ids=ids[:, :5])
    second = model(input_ids=ids[:, 5:], cache=first.cache.detach())
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole.logits)
    for a, b in zip(second.cache, whole.cache):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    assert all(not t.requires_grad for layer in first.cache.detach() for t in layer)


@pytest.mark.parametrize("name", RECURRENT)
def test_right_padding_leaves_final_state_at_last_real_token(name):
    model = make_model(name)
    ids = random_ids(batch=2, time=8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    padded = model(input_ids=ids, attention_mask=mask)
    alone = model(input_ids=ids[1:, :5])
    torch.testing.assert_close(padded.logits[1, :5], alone.logits[0])
    for a, b in zip(padded.cache, alone.cache):
        for x, y in zip(a, b):
            torch.testing.assert_close(x[1], y[0])


@pytest.mark.parametrize("name", RECURRENT)
def test_recurrent_layers_run_fused_once_per_layer_with_all_regularisers(name):
    model_type = FAMILIES[name][0]
    model = make_model(name, **DROPOUTS[model_type]).train()
    calls = []
    for layer in model.model.layers:
        layer.register_forward_hook(lambda module, args, out: calls.append(module))
    for time in (3, 30):
        calls.clear()
        ids = random_ids(time=time)
        model(input_ids=ids, labels=ids).loss.backward()
        assert len(calls) == model.config.num_hidden_layers  # no Python loop over time steps


def test_weight_dropout_matches_a_naive_lstm_with_the_dropped_matrix():
    model = make_model("lstm", num_hidden_layers=1, weight_dropout=0.5).train()
    layer = model.model.layers[0]
    ids = random_ids(batch=2, time=5)
    torch.manual_seed(123)
    features = model.model(input_ids=ids).last_hidden_state
    torch.manual_seed(123)
    w_hh = F.dropout(layer.weight_hh_l0, p=0.5, training=True)  # the same draw as inside the model
    assert (w_hh == 0).any()
    x = model.model.embed_tokens(ids)
    h = c = torch.zeros(2, 16)
    outputs = []
    for t in range(5):
        gates = x[:, t] @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h @ w_hh.T + layer.bias_hh_l0
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    torch.testing.assert_close(features, torch.stack(outputs, dim=1))


def test_locked_and_word_dropout_masks():
    from hwlm.models.modeling_recurrent import locked_dropout, word_dropout

    x = torch.ones(4, 10, 8)
    dropped = locked_dropout(x, 0.5, training=True)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # one mask per sequence, all time steps
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)

    ids = torch.tensor([[3, 5, 3, 7], [5, 3, 7, 7]])
    torch.manual_seed(0)
    out = word_dropout(torch.ones(2, 4, 6), ids, vocab_size=10, p=0.5)
    for word in (3, 5, 7):  # a word type is dropped everywhere or nowhere
        rows = out[ids == word]
        assert torch.equal(rows, rows[:1].expand_as(rows))


def test_eager_and_sdpa_attention_agree_with_padding_and_cache(tmp_path):
    model = make_model("transformer")
    model.save_pretrained(tmp_path)
    eager = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    ids = random_ids()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    real = mask.bool()  # padded query positions attend to nothing; their logits are not defined
    torch.testing.assert_close(
        eager(input_ids=ids, attention_mask=mask).logits[real], sdpa(input_ids=ids, attention_mask=mask).logits[real]
    )
    kwargs = dict(attention_mask=mask, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert torch.equal(eager.generate(ids, **kwargs), sdpa.generate(ids, **kwargs))


def test_copy_of_config_round_trips_through_dict():
    for name in FAMILIES:
        config = make_config(name)
        clone = type(config).from_dict(copy.deepcopy(config.to_dict()))
        assert clone.to_dict() == config.to_dict()


def test_hwlm_exports_the_model_classes():
    assert hwlm.HwlmLstmConfig.model_type == "hwlm_lstm"
    assert AutoModelForCausalLM.from_config(make_config("lstm")).__class__ is hwlm.HwlmLstmForCausalLM
