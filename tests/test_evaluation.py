"""Perplexity: streamed (state carrying) and sliding window, against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

import _toy  # noqa: F401
import hwlm  # noqa: F401
from hwlm.evaluation import evaluate_perplexity, sliding_windows


def tiny(model_type, **kw):
    torch.manual_seed(0)
    extra = {"num_attention_heads": 2, "max_position_embeddings": 16} if model_type == "hwlm_transformer" else {}
    cfg = AutoConfig.for_model(model_type, vocab_size=30, hidden_size=16, num_hidden_layers=2, **extra, **kw)
    return AutoModelForCausalLM.from_config(cfg).eval()


def full_sequence_nll(model, tokens):
    with torch.no_grad():
        logits = model(input_ids=tokens[None, :-1]).logits[0]  # (N-1, V)
    return F.cross_entropy(logits.float(), tokens[1:], reduction="sum").item()


@pytest.mark.parametrize("bptt", [1, 7, 200])
def test_single_stream_equals_one_pass_over_the_split(bptt):
    model = tiny("hwlm_lstm")
    tokens = torch.randint(0, 30, (101,))
    res = evaluate_perplexity(model, tokens, batch_size=1, bptt=bptt)
    assert res["num_tokens"] == 100
    assert res["loss"] == pytest.approx(full_sequence_nll(model, tokens) / 100, rel=1e-5)
    assert res["perplexity"] == pytest.approx(math.exp(res["loss"]))


def test_parallel_streams_score_every_token_once():
    model = tiny("hwlm_lstm")
    tokens = torch.randint(0, 30, (103,))
    res = evaluate_perplexity(model, tokens, batch_size=4, bptt=5)
    assert res["num_tokens"] == 102
    # 4 streams restart the state 3 times: equal to the sum of 4 independent single-stream passes
    L = math.ceil(102 / 4)
    expected = sum(full_sequence_nll(model, tokens[s * L : s * L + L + 1]) for s in range(4))
    assert res["loss"] * 102 == pytest.approx(expected, rel=1e-5)


def test_sliding_window_matches_the_recipe_and_counts_each_target_once():
    model = tiny("hwlm_transformer")
    tokens = torch.randint(0, 30, (50,))
    wins = sliding_windows(50, window=16, stride=8)
    assert wins[0] == (0, 0) and wins[1] == (8, 8)
    res = evaluate_perplexity(model, tokens, batch_size=3, window=16, stride=8)
    assert res["num_tokens"] == 49
    expected = 0.0
    scored = 0
    for begin, first in wins:
        x, y = tokens[begin : begin + 16], tokens[begin + 1 : begin + 17]
        with torch.no_grad():
            logits = model(input_ids=x[None]).logits[0, : y.numel()]
        expected += F.cross_entropy(logits, y, reduction="none")[first:].sum().item()
        scored += y.numel() - first
    assert scored == 49
    assert res["loss"] * 49 == pytest.approx(expected, rel=1e-5)
    # stride == window: disjoint blocks
    assert evaluate_perplexity(model, tokens, window=16, stride=16)["num_tokens"] == 49


def test_choice_follows_the_capability_flag_not_the_type():
    lstm, transformer = tiny("hwlm_lstm"), tiny("hwlm_transformer")
    assert lstm.carries_state and not transformer.carries_state
