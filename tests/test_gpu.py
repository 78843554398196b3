"""CUDA: training, generation and mixed precision on a GPU, for every family. Skipped without a CUDA device (CI and
the development machine have none; the device runs in docs/results say where they ran)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hwlm  # noqa: F401  registers the model types

from _toy import fit_losses

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FAMILIES = {
    "gru": ("hwlm_rnn", {"cell_type": "gru"}),
    "lstm": ("hwlm_lstm", {}),
    "transformer": ("hwlm_transformer", {"num_attention_heads": 2}),
    "memory_transformer": ("hwlm_transformer", {"num_attention_heads": 2, "memory_length": 8, "position_embedding_type": "alibi"}),
}


def make_model(name: str, device: str = "cuda"):
    model_type, extra = FAMILIES[name]
    config = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, num_hidden_layers=2, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(device)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_on_cuda_lowers_the_loss(name):
    model = make_model(name).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.arange(64, device="cuda").repeat(4, 2)[:, :48]  # (4, 48): a sequence the model can learn
    losses = fit_losses(model, ids, optimizer, steps=30)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", list(FAMILIES))
def test_greedy_generation_on_cuda_equals_cpu(name):
    ids = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    on_cpu = make_model(name, "cpu").eval().generate(ids, max_new_tokens=8, do_sample=False)
    on_gpu = make_model(name).eval().generate(ids.cuda(), max_new_tokens=8, do_sample=False)
    assert torch.equal(on_gpu.cpu(), on_cpu)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bf16_autocast_stays_close_to_fp32(name):
    model = make_model(name).eval()
    ids = torch.randint(0, 64, (2, 16), device="cuda")
    reference = torch.softmax(model(input_ids=ids).logits, -1)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = torch.softmax(model(input_ids=ids).logits.float(), -1)
    torch.testing.assert_close(mixed, reference, atol=0.02, rtol=0.1)
