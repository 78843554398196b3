"""Adaptive softmax (Grave et al. 2017) as the output layer of every family: loss, generation, save/load."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from test_models import VOCAB, make_model, naive_greedy, random_ids

ADAPTIVE = {"adaptive_softmax_cutoffs": [10, 30], "adaptive_softmax_div_value": 2.0, "tie_word_embeddings": False}


@pytest.fixture(params=["gru", "lstm", "transformer"])
def name(request):
    return request.param


def test_head_is_adaptive_and_loss_is_the_mean_nll_of_its_log_probs(name):
    model = make_model(name, **ADAPTIVE)
    assert isinstance(model.lm_head, nn.AdaptiveLogSoftmaxWithLoss)
    assert model.get_output_embeddings() is None  # nothing to tie or resize on the output side
    ids = random_ids()
    log_probs = model(input_ids=ids).logits  # (B, T, V) log-probabilities when no loss is asked for
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 9))
    labels = ids.clone()
    labels[0, 2:5] = -100
    targets = labels[:, 1:]
    kept = targets != -100
    expected = -log_probs[:, :-1].gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[kept].mean()
    out = model(input_ids=ids, labels=labels)
    assert out.logits is None  # the full-vocabulary product is what the adaptive softmax avoids
    torch.testing.assert_close(out.loss, expected)
    summed = model(input_ids=ids, shift_labels=ids, num_items_in_batch=1).loss
    torch.testing.assert_close(summed, -log_probs.gather(-1, ids.unsqueeze(-1)).sum())


def test_adaptive_model_trains_generates_and_round_trips(name, tmp_path):
    model = make_model(name, hidden_size=32, **ADAPTIVE).train()
    ids = random_ids(batch=2, time=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    model.eval()
    prompt = ids[:, :3]
    generated = model.generate(prompt, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert torch.equal(generated, naive_greedy(model, prompt, torch.ones_like(prompt), 5))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert int(generated.max()) < VOCAB
