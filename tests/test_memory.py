"""Segment memory for the Transformer: ALiBi attention over the last `memory_length` positions, carried across windows."""

import pytest
import torch
from torch.utils import _pytree as pytree
from transformers import AutoConfig

from hwlm.models.modeling_transformer import SegmentMemory
from test_models import VOCAB, make_model, random_ids

MEMORY = 5


def memory_model(seed=0, **overrides):
    return make_model("transformer_memory", seed=seed, **overrides)


def run_in_windows(model, ids, window):
    """Logits of a stream read window by window, the memory carried (and detached) as the training loop does."""
    cache, logits = None, []
    for start in range(0, ids.shape[1], window):
        out = model(input_ids=ids[:, start : start + window], cache=cache, use_cache=True)
        logits.append(out.logits)
        cache = out.cache.detach()
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("window", [1, 3, 7, 30])
def test_windows_with_memory_equal_one_pass(window):
    model = memory_model()
    ids = random_ids(batch=2, time=30)
    full = model(input_ids=ids, use_cache=False).logits
    chunked, cache = run_in_windows(model, ids, window)
    torch.testing.assert_close(chunked, full)
    assert isinstance(cache, SegmentMemory) and cache.get_seq_length() == 30
    assert all(layer.keys.shape[-2] == MEMORY for layer in cache.layers)  # only the memory is kept


def test_attention_reaches_exactly_memory_length_back_per_layer():
    model = memory_model()  # 2 layers: a position sees at most 2 * MEMORY tokens back
    ids = random_ids(batch=1, time=30)
    base = model(input_ids=ids, use_cache=False).logits
    changed = ids.clone()
    changed[0, 10] = (changed[0, 10] + 1) % VOCAB
    diff = (model(input_ids=changed, use_cache=False).logits - base).abs().amax(dim=-1)[0]  # (T,)
    assert torch.all(diff[:10] == 0)  # causal: the past never sees the future
    assert torch.all(diff[10 : 10 + 2 * MEMORY + 1] > 0)  # within reach: layer 1 span, then layer 2 span
    assert torch.all(diff[10 + 2 * MEMORY + 1 :] == 0)  # beyond both spans: the change is forgotten


def test_causality_across_windows_with_memory():
    model = memory_model()
    ids = random_ids(batch=2, time=24)
    base, _ = run_in_windows(model, ids, window=6)
    for t in (3, 5, 6, 13, 22):  # inside a window, at its end, at the start of the next
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % VOCAB
        other, _ = run_in_windows(model, changed, window=6)
        torch.testing.assert_close(other[:, : t + 1], base[:, : t + 1])


def test_generation_with_memory_equals_the_naive_full_recompute():
    model = memory_model()
    prompt = random_ids(batch=2, time=4)
    generated = model.generate(prompt, max_new_tokens=15, do_sample=False, eos_token_id=None)
    sequence = prompt
    for _ in range(15):  # no cache: every step recomputes the whole sequence
        logits = model(input_ids=sequence, use_cache=False).logits[:, -1]
        sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, sequence)


def test_gradients_stop_at_the_detached_memory():
    model = memory_model().train()
    ids = random_ids(batch=2, time=12)
    # Window 1 enters as a leaf of its own, so what reaches it from window 2's loss is exactly the graph through memory.
    window_1 = model.get_input_embeddings()(ids[:, :6]).detach().requires_grad_()  # (B, 6, C)
    first = model(inputs_embeds=window_1, use_cache=True)
    memory = first.cache.detach()
    assert not any(layer.keys.requires_grad or layer.values.requires_grad for layer in memory.layers)
    assert all(layer.keys.requires_grad for layer in first.cache.layers)  # detach() copies; the original keeps its graph
    model(input_ids=ids[:, 6:], labels=ids[:, 6:], cache=memory).loss.backward()
    assert window_1.grad is None  # truncated: nothing flows back into window 1
    model(input_ids=ids[:, 6:], labels=ids[:, 6:], cache=first.cache).loss.backward()
    assert window_1.grad is not None and window_1.grad.abs().sum() > 0  # without the detach it would


def test_memory_is_a_pytree_of_its_keys_and_values():
    model = memory_model()
    ids = random_ids(batch=2, time=9)
    memory = model(input_ids=ids, use_cache=True).cache
    leaves, spec = pytree.tree_flatten(memory)
    assert len(leaves) == 2 * model.config.num_hidden_layers
    restored = pytree.tree_unflatten([t.clone() for t in leaves], spec)
    assert isinstance(restored, SegmentMemory) and restored.get_seq_length() == 9
    more = random_ids(batch=2, time=4, seed=7)
    torch.testing.assert_close(
        model(input_ids=more, cache=restored).logits, model(input_ids=more, cache=memory).logits
    )


def test_stateful_only_with_memory_and_memory_needs_alibi():
    assert memory_model().carries_state
    assert not make_model("transformer").carries_state
    with pytest.raises(ValueError, match="memory_length=8 needs position_embedding_type='alibi'"):
        AutoConfig.for_model("hwlm_transformer", memory_length=8)
    with pytest.raises(ValueError, match="memory_length"):
        AutoConfig.for_model("hwlm_transformer", position_embedding_type="alibi", memory_length=0)


def test_alibi_without_memory_is_a_plain_causal_model_within_its_context():
    model = make_model("transformer", position_embedding_type="alibi")
    ids = random_ids(batch=2, time=12)
    full = model(input_ids=ids, use_cache=False).logits
    prefix = model(input_ids=ids[:, :5], use_cache=True)
    torch.testing.assert_close(model(input_ids=ids[:, 5:], cache=prefix.cache).logits, full[:, 5:])
    with pytest.raises(ValueError, match="longer than max_position_embeddings=40"):
        model(input_ids=random_ids(batch=1, time=41))
