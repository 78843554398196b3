"""Evaluation protocols forced by name: the pytorch/examples chunk protocol against a naive loop, and the words
`describe_protocol` puts in the results READMEs."""

import math

import pytest
import torch
import torch.nn.functional as F

from hwlm.evaluation import describe_protocol, evaluate_perplexity
from test_evaluation import tiny
from test_memory import memory_model
from test_models import VOCAB


def naive_chunks_nll(model, tokens, *, streams, chunk):
    """pytorch/examples' evaluate() written out, on hwlm's stream layout: stream s holds tokens s*L .. s*L+L
    (L = ceil((N-1)/streams), so every target is scored once); each chunk of `chunk` inputs is read alone."""
    n = tokens.numel()
    L = math.ceil((n - 1) / streams)
    total, count = 0.0, 0
    for s in range(streams):
        stream = tokens[s * L : s * L + L + 1]
        for i in range(0, stream.numel() - 1, chunk):
            x, y = stream[i : i + chunk], stream[i + 1 : i + 1 + chunk]
            x = x[: y.numel()]
            with torch.no_grad():
                logits = model(input_ids=x[None]).logits[0]  # (T, V)
            total += F.cross_entropy(logits.float(), y, reduction="sum").item()
            count += y.numel()
    return total, count


@pytest.mark.parametrize("family", ["hwlm_transformer", "hwlm_lstm"])
@pytest.mark.parametrize("streams,chunk", [(1, 7), (3, 5), (4, 16)])
def test_chunks_equal_a_naive_loop_over_disjoint_chunks(family, streams, chunk):
    model = tiny(family)
    tokens = torch.randint(0, 30, (61,))
    res = evaluate_perplexity(model, tokens, protocol="chunks", batch_size=streams, window=chunk)
    total, count = naive_chunks_nll(model, tokens, streams=streams, chunk=chunk)
    assert res["num_tokens"] == count == 60
    assert res["loss"] * count == pytest.approx(total, rel=1e-5)


def test_chunks_read_less_context_than_the_carried_stream():
    # The LSTM read as one stream carries its state; cut into chunks it restarts at every chunk: the figures differ,
    # and the chunk figure equals the carried one only when one chunk holds the whole split.
    model = tiny("hwlm_lstm")
    with torch.no_grad():  # larger weights: a freshly initialised tiny LSTM predicts nearly uniformly
        for p in model.parameters():
            p.mul_(8)
    tokens = torch.randint(0, 30, (41,))
    stream = evaluate_perplexity(model, tokens, batch_size=1, bptt=5)
    chunks = evaluate_perplexity(model, tokens, protocol="chunks", batch_size=1, window=5)
    whole = evaluate_perplexity(model, tokens, protocol="chunks", batch_size=1, window=40)
    assert abs(chunks["loss"] - stream["loss"]) > 1e-3
    assert whole["loss"] == pytest.approx(stream["loss"], rel=1e-5)


def test_memory_model_under_chunks_forgets_the_previous_chunk():
    # Read as a stream, the memory reaches into the previous window; read in chunks, nothing crosses a chunk, so
    # the figure equals the naive loop that feeds each chunk alone.
    model = memory_model()
    tokens = torch.randint(0, VOCAB, (1, 43))[0]
    chunks = evaluate_perplexity(model, tokens, protocol="chunks", batch_size=2, window=6)
    total, count = naive_chunks_nll(model, tokens, streams=2, chunk=6)
    assert chunks["loss"] * count == pytest.approx(total, rel=1e-5)
    stream = evaluate_perplexity(model, tokens, protocol="stream", batch_size=2, bptt=6)
    assert abs(stream["loss"] - chunks["loss"]) > 1e-4


def test_forced_sliding_window_equals_auto_for_the_plain_transformer():
    model = tiny("hwlm_transformer")
    tokens = torch.randint(0, 30, (50,))
    auto = evaluate_perplexity(model, tokens, batch_size=3, window=16, stride=8)
    forced = evaluate_perplexity(model, tokens, protocol="sliding_window", batch_size=3, window=16, stride=8)
    assert forced == auto


def test_protocol_errors_name_the_value_and_the_choices():
    model = tiny("hwlm_transformer")
    tokens = torch.randint(0, 30, (20,))
    with pytest.raises(ValueError, match=r"protocol='windows' is not one of \('auto', 'stream'"):
        evaluate_perplexity(model, tokens, protocol="windows")
    with pytest.raises(ValueError, match="protocol='stream' needs a model that carries state"):
        evaluate_perplexity(model, tokens, protocol="stream")
    assert model.training is False  # refused before anything ran


def test_describe_protocol_counts_the_tokens_a_prediction_reads():
    assert "reading 19 to 35 tokens (the current one and 18 to 34 before it" in describe_protocol(
        "sliding_window", window=35, stride=17)
    assert "10 parallel streams cut into disjoint 35-token chunks" in describe_protocol("chunks", streams=10, window=35)
    assert "0 to 34 before it" in describe_protocol("chunks", streams=10, window=35)
    text = describe_protocol("stream", streams=1, memory_length=70, num_layers=2)
    assert "one stream" in text and "the 70 before it (up to 140 through 2 layers" in text
    assert "10 parallel streams (the split cut into 10 contiguous parts" in describe_protocol("stream", streams=10)
    assert "the 8 before it (fewer only in the first 8 tokens" in describe_protocol("stream", memory_length=8)
    with pytest.raises(ValueError, match="needs window and stride"):
        describe_protocol("sliding_window", window=35)
