"""
hwlm.research.gradient_flow against independent references: a naive Python-loop RNN/GRU/LSTM built from the model's own weights
(one tensor per h_t and c_t, so autograd's gradient is the total derivative), finite differences for the
Transformer, and the closed form of a scaled-orthogonal tanh RNN in its linear regime.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

import _toy  # noqa: F401  (one intra-op thread)
import hwlm  # noqa: F401
from hwlm.research.gradient_flow import corpus_sequences, decay_per_step, gradient_flow, plot_gradient_flow, position_gradients

VOCAB = 40


def tiny(model_type, **fields):
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, hidden_size=12, num_hidden_layers=2, **fields)
    return AutoModelForCausalLM.from_config(config).eval()


def naive_unrolled(model, ids, targets):
    """
    The recurrent model written as a Python loop over time in float64 from its weights. Returns the gradient of
    the last-position loss w.r.t. the embedding, every h_t and (LSTM) every c_t, each (B, T, H).
    """
    model = model.double()
    batch, time = ids.shape
    embeds = model.model.embed_tokens(ids).detach().requires_grad_()  # (B, T, E)
    inputs = [embeds[:, t] for t in range(time)]
    kept = {}
    for i, layer in enumerate(model.model.layers):
        w_ih, w_hh, b_ih, b_hh = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
        h = torch.zeros(batch, layer.hidden_size, dtype=torch.float64)
        c = torch.zeros_like(h)
        outputs = []
        for x in inputs:
            if layer.mode == "RNN_TANH":
                h = torch.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
            elif layer.mode == "GRU":
                r_i, z_i, n_i = (x @ w_ih.T + b_ih).chunk(3, -1)
                r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, -1)
                r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
                h = (1 - z) * torch.tanh(n_i + r * n_h) + z * h
            else:
                gi, gf, gg, go = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
                c = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
                c.retain_grad()
                h = torch.sigmoid(go) * torch.tanh(c)
                kept.setdefault(f"layer{i + 1}.c", []).append(c)
            h.retain_grad()
            kept.setdefault(f"layer{i + 1}.h", []).append(h)
            outputs.append(h)
        inputs = outputs
    loss = F.cross_entropy(model.lm_head(inputs[-1]), targets, reduction="sum")
    loss.backward()
    grads = {name: torch.stack([t.grad for t in tensors], dim=1) for name, tensors in kept.items()}
    return {"embedding": embeds.grad, **grads}


@pytest.mark.parametrize("model_type, fields", [("hwlm_rnn", {"cell_type": "tanh"}), ("hwlm_rnn", {"cell_type": "gru"}), ("hwlm_lstm", {"initializer_range": 0.5})])
def test_per_step_gradients_match_a_naive_unrolled_loop(model_type, fields):
    model = tiny(model_type, **fields)
    ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 5, 7])
    _, vectors, _ = position_gradients(model, ids, targets)
    reference = naive_unrolled(model, ids, targets)
    for name, expected in reference.items():
        torch.testing.assert_close(vectors[name], expected, rtol=1e-9, atol=1e-12, msg=name)
    assert vectors["layer1.h"][:, 0].norm() > 0  # the first position does receive gradient


def test_lstm_cell_gradient_splits_into_the_exercise_formula():
    """dL/dc_t = dL/dh_t · diag(o_t)(1 - tanh² c_t) + dL/dc_{t+1} · diag(f_{t+1}); `c_carried` is the second term."""
    model = tiny("hwlm_lstm", initializer_range=0.5).double()
    ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([3, 4])
    _, vectors, diagnostics = position_gradients(model, ids, targets)
    layer, embed = model.model.layers[0], model.model.embed_tokens
    with torch.no_grad():
        h_seq = model(input_ids=ids, output_hidden_states=True).hidden_states[1]  # (B, T, H)
        c_seq = torch.stack([model(input_ids=ids[:, : t + 1]).cache[0][1] for t in range(ids.shape[1])], dim=1)
        h_prev = torch.cat([torch.zeros_like(h_seq[:, :1]), h_seq[:, :-1]], dim=1)  # (B, T, H)
        z = embed(ids) @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h_prev @ layer.weight_hh_l0.T + layer.bias_hh_l0
        _, f, _, o = torch.sigmoid(z).chunk(4, -1)  # (the cell candidate's sigmoid is unused)
        torch.testing.assert_close(h_seq, o * torch.tanh(c_seq))  # the gates read are the kernel's
        tanh_c = torch.tanh(c_seq)
    d_h, d_c, carried = vectors["layer1.h"], vectors["layer1.c"], vectors["layer1.c_carried"]
    for t in range(ids.shape[1] - 1):
        torch.testing.assert_close(carried[:, t], d_c[:, t + 1] * f[:, t + 1])
        torch.testing.assert_close(d_c[:, t], d_h[:, t] * o[:, t] * (1 - tanh_c[:, t] ** 2) + d_c[:, t + 1] * f[:, t + 1])
    assert carried[:, -1].abs().max() == 0  # nothing follows the last position
    assert 0.3 < diagnostics["layer1.forget_gate"] < 0.7


def test_transformer_embedding_gradient_matches_finite_differences():
    model = tiny("hwlm_transformer", num_attention_heads=2, intermediate_size=24, max_position_embeddings=16).double()
    ids = torch.randint(0, VOCAB, (1, 8), generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([2])
    _, vectors, _ = position_gradients(model, ids, targets)
    grad = vectors["embedding"]  # (1, T, C)
    assert grad.shape == (1, 8, 12)
    embeds = model.model.embed_tokens(ids).detach()

    def loss(e):
        return F.cross_entropy(model(inputs_embeds=e, use_cache=False).logits[:, -1], targets, reduction="sum")

    eps = 1e-6
    with torch.no_grad():
        for t in (0, 3, 7):
            direction = torch.zeros_like(embeds)
            direction[:, t] = torch.randn(12, dtype=torch.float64, generator=torch.Generator().manual_seed(t))
            numeric = (loss(embeds + eps * direction) - loss(embeds - eps * direction)) / (2 * eps)
            torch.testing.assert_close(numeric, (grad * direction).sum(), rtol=1e-5, atol=1e-10)
    # The last block's output at t < T never reaches the loss at T: reported as exactly zero (None in the norms).
    flow = gradient_flow(model, ids, targets)
    assert flow.norms["layer2.h"][0] > 0 and all(v is None for v in flow.norms["layer2.h"][1:])


@pytest.mark.parametrize("scale", [0.6, 0.95, 1.1])
def test_scaled_orthogonal_tanh_rnn_decays_by_the_scale_factor(scale):
    """W_hh = a·Q (Q orthogonal), tiny inputs so tanh is ~linear: ||dL/dh_t|| = a^(T-t) ||dL/dh_T||."""
    torch.manual_seed(0)
    hidden = 16
    config = AutoConfig.for_model("hwlm_rnn", cell_type="tanh", vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=1)
    model = AutoModelForCausalLM.from_config(config).eval()
    layer = model.model.layers[0]
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden))
    with torch.no_grad():
        layer.weight_hh_l0.copy_(scale * q)
        model.model.embed_tokens.weight.mul_(1e-4)  # h stays ~1e-4: tanh'(a) = 1 - h^2 ≈ 1
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(4))
    flow = gradient_flow(model, ids, torch.tensor([1, 2]))
    assert flow.decay["layer1.h"] == pytest.approx(scale, rel=1e-4)
    ratios = [b / a for a, b in zip(flow.norms["layer1.h"], flow.norms["layer1.h"][1:])]
    assert all(r == pytest.approx(scale, rel=1e-3) for r in ratios)  # step by step (norms kept to 4 digits)
    assert flow.info["diagnostics"]["layer1.weight_hh_spectral_radius"] == pytest.approx(scale, rel=1e-5)


def test_decay_fit_and_sequences():
    assert decay_per_step([5.0] + [0.5**d for d in range(1, 10)]) == pytest.approx(0.5)
    assert decay_per_step([1.0, None, None]) is None
    ids, targets = corpus_sequences(torch.arange(30), 4, num_sequences=2, offset=3)
    assert ids.tolist() == [[3, 4, 5, 6], [8, 9, 10, 11]] and targets.tolist() == [7, 12]
    with pytest.raises(ValueError, match="need 31"):
        corpus_sequences(torch.arange(30), 9, num_sequences=3, offset=1)


def test_input_model_is_left_untouched_and_plot_is_written(tmp_path):
    model = tiny("hwlm_lstm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, VOCAB, (1, 6))
    flow = gradient_flow(model, ids, torch.tensor([0]), label="lstm")
    assert all(p.grad is None and p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(flow.norms) == {"embedding", "layer1.h", "layer1.c", "layer1.c_carried", "layer2.h", "layer2.c", "layer2.c_carried"}
    assert len(flow.norms["embedding"]) == 6 and math.isfinite(flow.loss)
    plot_gradient_flow([("init", [flow])], tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000
