"""
The course exercise hwlm grew from, checked with autograd on hwlm's own models.

1. A scalar RNN with h0 = 0: p = h0 + u1, q = w p, r = q + u2, s = w r, t = s + u3, y = w t.
   By hand: dy/dw = 3 u1 w^2 + 2 u2 w + u3 and dy/dp = w^3.
2. The LSTM's additive cell-state path:
   dL/dC_{T-1} = dL/dh_{T-1} · diag(o_{T-1})(1 - tanh^2 C_{T-1}) + dL/dC_T · diag(f_T),
   with the gates read from the model's own weights.
"""

import pytest
import torch
from torch.func import functional_call
from transformers import AutoConfig, AutoModelForCausalLM

import hwlm  # noqa: F401
from hwlm import RecurrentState


def scalar_rnn(u, w):
    """hwlm_rnn with one unit, identity-like ReLU cell (all values stay positive): h_t = w h_{t-1} + u_t."""
    config = AutoConfig.for_model(
        "hwlm_rnn", cell_type="relu", vocab_size=3, embedding_size=1, hidden_size=1, num_hidden_layers=1
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    layer = model.model.layers[0]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.tensor(u).view(3, 1))  # token k's embedding is u_{k+1}
        layer.weight_ih_l0.fill_(1.0)
        layer.bias_ih_l0.zero_()
        layer.bias_hh_l0.zero_()
        model.lm_head.weight.zero_()
    # w is one number used twice, as the recurrent weight and the output weight (y = w t): one leaf for both.
    params = {"model.layers.0.weight_hh_l0": w.view(1, 1), "lm_head.weight": torch.cat([w.view(1, 1), torch.zeros(2, 1)])}
    return model, params


@pytest.mark.parametrize("u1, u2, u3, w", [(0.5, 1.5, 2.0, 0.7), (2.0, 0.1, 0.3, 1.3)])
def test_scalar_rnn_derivatives_match_the_hand_derivation(u1, u2, u3, w):
    w_leaf = torch.tensor(w, requires_grad=True)
    model, params = scalar_rnn([u1, u2, u3], w_leaf)
    ids = torch.tensor([[0, 1, 2]])
    y = functional_call(model, params, kwargs={"input_ids": ids}).logits[0, -1, 0]
    torch.testing.assert_close(y, torch.tensor(w**3 * u1 + w**2 * u2 + w * u3))
    (dy_dw,) = torch.autograd.grad(y, w_leaf)
    torch.testing.assert_close(dy_dw, torch.tensor(3 * u1 * w**2 + 2 * u2 * w + u3))

    # dy/dp: p = h1 is the state after the first word; carry it in as the cache and differentiate through it.
    first = functional_call(model, params, kwargs={"input_ids": ids[:, :1]})
    p = first.cache[0][0].detach().requires_grad_()
    torch.testing.assert_close(p, torch.tensor([[u1]]))
    rest = functional_call(model, params, kwargs={"input_ids": ids[:, 1:], "cache": RecurrentState([(p,)], 1)})
    (dy_dp,) = torch.autograd.grad(rest.logits[0, -1, 0], p)
    torch.testing.assert_close(dy_dp, torch.tensor([[w**3]]))


def lstm_gates(layer, x, h):
    """Gates of one nn.LSTM step from the layer's own weights (PyTorch's order: input, forget, cell, output)."""
    z = x @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h @ layer.weight_hh_l0.T + layer.bias_hh_l0  # (B, 4H)
    i, f, g, o = z.chunk(4, dim=-1)
    return torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)


def test_lstm_cell_state_gradient_has_the_additive_forget_gate_path():
    torch.manual_seed(0)
    config = AutoConfig.for_model("hwlm_lstm", vocab_size=30, hidden_size=8, num_hidden_layers=1, initializer_range=0.5)
    model = AutoModelForCausalLM.from_config(config).eval()
    layer, embed = model.model.layers[0], model.model.embed_tokens
    ids = torch.randint(0, 30, (2, 10))
    targets = torch.randint(0, 30, (2, 10))
    s = 5  # the step called T-1 in the formula; T = s + 1

    # Steps 0..s-1, then step s: the model's h_{T-1}, C_{T-1}, and o_{T-1} read from the weights.
    before = model(input_ids=ids[:, :s]).cache
    at_s = model(input_ids=ids[:, s : s + 1], cache=before).cache
    h_s, c_s = at_s[0]
    _, _, _, o_s = lstm_gates(layer, embed(ids[:, s]), before[0][0])
    torch.testing.assert_close(h_s, o_s * torch.tanh(c_s))  # the gates we read are the ones the kernel used

    # Rebuild h_{T-1} from a leaf C_{T-1}, so autograd's dL/dC_{T-1} is the total derivative of the formula.
    c_leaf = c_s.detach().requires_grad_()
    h_prev = o_s.detach() * torch.tanh(c_leaf)
    h_prev.retain_grad()
    step_t = model(
        input_ids=ids[:, s + 1 : s + 2],
        cache=RecurrentState([(h_prev, c_leaf)], s + 1),
        shift_labels=targets[:, s + 1 : s + 2],
        num_items_in_batch=1,
        output_hidden_states=True,
    )
    out_t = step_t.hidden_states[1]  # (B, 1, H): h_T as fed to the output layer
    out_t.retain_grad()
    h_t, c_t = step_t.cache[0]
    h_t.retain_grad()
    c_t.retain_grad()
    later = model(input_ids=ids[:, s + 2 :], cache=step_t.cache, shift_labels=targets[:, s + 2 :], num_items_in_batch=1)
    (step_t.loss + later.loss).backward()

    # dL/dC_T and dL/dh_T in the unrolled graph: h_T reaches L through the output layer and through step T+1.
    _, f_t, _, o_t = lstm_gates(layer, embed(ids[:, s + 1]), h_prev)
    dL_dh_t = out_t.grad[:, 0] + h_t.grad
    dL_dc_t = c_t.grad + dL_dh_t * o_t * (1 - torch.tanh(c_t) ** 2)

    lhs = c_leaf.grad
    rhs = h_prev.grad * o_s * (1 - torch.tanh(c_s) ** 2) + dL_dc_t * f_t
    torch.testing.assert_close(lhs, rhs.detach())
    assert (dL_dc_t * f_t).abs().sum() > 0.1 * lhs.abs().sum()  # the additive path carries real gradient
