"""Gradient flow through time: how strongly the loss at the last position reaches back to earlier positions.

For a sequence x_1 .. x_T and the loss L = cross-entropy of the prediction made at position T, this module
measures, for every earlier position t and every layer, the norm of the *total* derivative of L with respect to

* the input embedding at t (every model: the vector fed to the first layer, position embedding included),
* the output of layer l at t (`layer{l}.h`: a recurrent layer's hidden state h_t, a Transformer block's
  residual stream after block l),
* for the LSTM, the cell state c_t of layer l (`layer{l}.c`),

and reports them against the distance d = T - t (d = 0 is the last position).

Why the models are run one token at a time. A recurrent layer runs as one fused kernel over the sequence, so the
gradient of its output tensor only holds the path to the layers above; the recurrent path is hidden inside the
kernel. Fed one token per call with the state carried (not detached), h_t exists as two tensors: the layer's output
at t (upward path) and the state handed to step t+1 (recurrent path); their gradients add up to dL/dh_t in the
unrolled graph. A model without state carrying (the Transformer) is run once over the whole sequence: each
position's layer output is then one tensor, and its gradient is already the total derivative.

Which LSTM cell-state gradient. In the unrolled graph h_t = o_t tanh(c_t), so c_t reaches L both through c_{t+1}
and through h_t. `layer{l}.c` is the total derivative, the exercise's quantity
``dL/dc_t = dL/dh_t · diag(o_t)(1 - tanh² c_t) + dL/dc_{t+1} · diag(f_{t+1})``; the first term is added to the
gradient of the carried cell tensor (the second term) with o_t read from the layer's weights.
`layer{l}.c_carried` is the second term alone: the constant-error-carousel path.

A Transformer with segment memory (`memory_length`) is run as it is trained: in windows of `window` tokens (the last
window ends at T), the memory carried from one to the next and detached. The gradient of L then stops at the window
boundary: every position before the last window gets exactly zero, however far the memory's attention reaches in the
forward pass (`diagnostics["max_gradient_before_window"]` reports it, and the plot has no points there).

Computation is in float64 on a copy of the model: a tanh RNN's gradient falls by ~10^-20 over 60 steps at
initialisation, and float32 would flush the tail of the curve to zero.

Shape legend: B sequences, T positions, H width of the quantity (hidden, cell, embedding), L layers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwlm.model_building import supports_state_carrying
from hwlm.errors import UserError

__all__ = [
    "GradientFlow",
    "gradient_flow",
    "position_gradients",
    "decay_per_step",
    "corpus_sequences",
    "random_sequences",
    "plot_gradient_flow",
]


@dataclass
class GradientFlow:
    """
    The measured gradient norms of one model on one set of sequences.

    Args:
        label (`str`): name shown in the plot legend.
        norms (`dict[str, list[float | None]]`): per series, the gradient norm at distance d = T - t for
            d = 0 .. T-1 (geometric mean over the sequences); `None` where the gradient is exactly zero.
        decay (`dict[str, float | None]`): per series, the fitted per-step ratio (see `decay_per_step`).
        loss (`float`): the loss at the last position (mean over the sequences).
        info (`dict`): model type, cell type, parameter count, and gate/weight diagnostics.
    """

    label: str
    norms: dict[str, list[float | None]]
    decay: dict[str, float | None]
    loss: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "loss": self.loss, **self.info, "decay_per_step": self.decay, "norms": self.norms}


def _last_position_loss(logits: torch.Tensor, targets: torch.LongTensor) -> torch.Tensor:
    # Summed over the batch: rows never interact (eval mode), so row b's gradients are those of its own loss.
    return F.cross_entropy(logits[:, -1], targets, reduction="sum")


def _gates(layer: nn.Module, x: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """
    Gate activations of one step of a fused single-layer `nn.LSTM`/`nn.GRU` from its own weights (PyTorch's gate
    order: LSTM input, forget, cell, output; GRU reset, update, new). x (B, in), h (B, H) → each (B, H).
    """
    if layer.mode not in ("LSTM", "GRU"):
        return {}
    z_in = x @ layer.weight_ih_l0.T + layer.bias_ih_l0  # (B, kH)
    z_hh = h @ layer.weight_hh_l0.T + layer.bias_hh_l0  # (B, kH)
    if layer.mode == "LSTM":
        i, f, _, o = (z_in + z_hh).chunk(4, dim=-1)
        return {"input": torch.sigmoid(i), "forget": torch.sigmoid(f), "output": torch.sigmoid(o)}
    r_in, u_in, _ = z_in.chunk(3, dim=-1)
    r_hh, u_hh, _ = z_hh.chunk(3, dim=-1)
    # h' = (1 - u) * n + u * h: the update gate u is the fraction of the old state kept (the GRU's "forget" gate).
    return {"reset": torch.sigmoid(r_in + r_hh), "update": torch.sigmoid(u_in + u_hh)}


def _recurrent_gradients(model, embeds: torch.Tensor, targets: torch.LongTensor):
    """
    Run a state-carrying model one token at a time and return (loss, gradient vectors per series (B, T, H),
    diagnostics). embeds (B, T, E) is fed as `inputs_embeds`; targets (B,) are the next tokens after position T.
    """
    batch, time, _ = embeds.shape
    embeds = embeds.detach().requires_grad_()
    layers = list(model.model.layers)
    projection = model.model.projection
    state, steps = None, []
    for t in range(time):
        out = model(inputs_embeds=embeds[:, t : t + 1], cache=state, use_cache=True, output_hidden_states=True)
        for tensor in (*out.hidden_states, *(x for layer in out.cache for x in layer)):
            tensor.retain_grad()
        steps.append((state, out.hidden_states, out.cache))
        state = out.cache
    loss = _last_position_loss(out.logits, targets)
    loss.backward()

    def grad(tensor):
        return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)

    series: dict[str, list[torch.Tensor]] = {"embedding": [embeds.grad[:, t] for t in range(time)]}
    gate_values: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for t, (before, hidden, after) in enumerate(steps):
            for i, layer in enumerate(layers):
                name = f"layer{i + 1}"
                # dL/dh_t: upward path (this step's layer output) + recurrent path (the state handed to step t+1).
                d_up = grad(hidden[i + 1])[:, 0]
                if i == len(layers) - 1 and projection is not None:
                    # The last hidden state is what the output layer reads: the projection of h_t (eval mode).
                    d_up = d_up @ projection.weight  # (B, E) → (B, H)
                d_h = d_up + grad(after[i][0])  # (B, H)
                series.setdefault(f"{name}.h", []).append(d_h)
                h_prev = before[i][0] if before is not None else torch.zeros_like(after[i][0])
                gates = _gates(layer, hidden[i][:, 0], h_prev)
                for gate, value in gates.items():
                    gate_values.setdefault(f"{name}.{gate}_gate", []).append(value)
                if len(after[i]) == 2:  # a cell state: LSTM
                    c_t = after[i][1]
                    carried = grad(c_t)  # dL/dc_{t+1} · diag(f_{t+1}): the path through the next cell state
                    through_h = d_h * gates["output"] * (1 - torch.tanh(c_t) ** 2)  # dL/dh_t · diag(o_t)(1 - tanh² c_t)
                    series.setdefault(f"{name}.c", []).append(carried + through_h)
                    series.setdefault(f"{name}.c_carried", []).append(carried)
    vectors = {k: torch.stack(v, dim=1) for k, v in series.items()}  # each (B, T, H)
    diagnostics = {k: float(torch.stack(v).mean()) for k, v in gate_values.items()}
    for i, layer in enumerate(layers):
        if layer.mode.startswith("RNN_"):
            # A vanilla RNN's backward step is diag(f'(a_t)) W_hh^T: its norm is at most sigma_max(W_hh) * max f'.
            diagnostics[f"layer{i + 1}.weight_hh_spectral_norm"] = float(torch.linalg.matrix_norm(layer.weight_hh_l0, ord=2))
            diagnostics[f"layer{i + 1}.weight_hh_spectral_radius"] = float(torch.linalg.eigvals(layer.weight_hh_l0).abs().max())
            if layer.mode == "RNN_TANH":
                outs = torch.stack([after[i][0].detach() for _, _, after in steps], dim=1)  # (B, T, H): h_t
                diagnostics[f"layer{i + 1}.mean_tanh_derivative"] = float((1 - outs**2).mean())
    return loss, vectors, diagnostics


def _one_pass_gradients(model, embeds: torch.Tensor, targets: torch.LongTensor):
    """Models without state carrying: one forward over the sequence; each position's layer output is one tensor."""
    embeds = embeds.detach().requires_grad_()
    out = model(inputs_embeds=embeds, use_cache=False, output_hidden_states=True)
    for tensor in out.hidden_states[1:]:
        tensor.retain_grad()
    loss = _last_position_loss(out.logits, targets)
    loss.backward()
    vectors = {"embedding": embeds.grad}
    for i, tensor in enumerate(out.hidden_states[1:]):
        vectors[f"layer{i + 1}.h"] = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)  # (B, T, H)
    return loss, vectors, {}


def _windowed_gradients(model, embeds: torch.Tensor, targets: torch.LongTensor, window: int):
    """Segment-memory models: windows of `window` tokens (the last ending at T), memory carried and detached."""
    time = embeds.shape[1]
    embeds = embeds.detach().requires_grad_()
    starts = sorted(range(time - window, -window, -window))
    cache, hidden = None, []
    for start in starts:
        chunk = embeds[:, max(start, 0) : start + window]
        out = model(inputs_embeds=chunk, cache=cache, use_cache=True, output_hidden_states=True)
        for tensor in out.hidden_states[1:]:
            tensor.retain_grad()
        hidden.append(out.hidden_states[1:])
        cache = out.cache.detach()  # the truncation of truncated BPTT, as in training
    loss = _last_position_loss(out.logits, targets)
    loss.backward()
    vectors = {"embedding": embeds.grad}
    for i in range(model.config.num_hidden_layers):
        layer = [h[i].grad if h[i].grad is not None else torch.zeros_like(h[i]) for h in hidden]
        vectors[f"layer{i + 1}.h"] = torch.cat(layer, dim=1)  # (B, T, C)
    before = time - min(window, time)
    diagnostics = {
        "window": window,
        "memory_length": model.config.memory_length,
        "max_gradient_before_window": float(embeds.grad[:, :before].abs().max()) if before else 0.0,
    }
    return loss, vectors, diagnostics


def position_gradients(
    model, input_ids: torch.LongTensor, targets: torch.LongTensor, *, dtype=torch.float64, window: int | None = None
):
    """
    Gradient vectors of the last-position loss with respect to every position's embedding, layer outputs and (LSTM)
    cell states.

    Args:
        model: an hwlm causal LM (any family); it is copied, not modified.
        input_ids (`torch.LongTensor` of shape `(B, T)`): the sequences.
        targets (`torch.LongTensor` of shape `(B,)`): the token that follows each sequence (the target of the
            prediction at position T).
        dtype (`torch.dtype`): precision of the computation (float64 by default, see the module docstring).
        window (`int`, *optional*): for a Transformer with segment memory, the training window (default: its
            `memory_length`); ignored by other models.

    Returns:
        `(loss, vectors, diagnostics)`: the summed loss (a 0-d tensor), a dict series name → gradient tensor
        (B, T, H) indexed by position t (not distance), and a dict of gate means / recurrent-weight norms.
    """
    if input_ids.dim() != 2 or targets.shape != input_ids.shape[:1]:
        raise UserError(
            f"input_ids must be (B, T) and targets (B,), got {tuple(input_ids.shape)} and {tuple(targets.shape)}."
        )
    work = copy.deepcopy(model).to(dtype).eval()
    work.requires_grad_(False)  # only the activations' gradients are wanted
    with torch.enable_grad():
        embeds = work.get_input_embeddings()(input_ids.to(work.device))  # (B, T, E)
        targets = targets.to(work.device)
        memory = getattr(work.config, "memory_length", None)
        if memory is not None:
            return _windowed_gradients(work, embeds, targets, window or memory)
        if supports_state_carrying(work):
            return _recurrent_gradients(work, embeds, targets)
        return _one_pass_gradients(work, embeds, targets)


def decay_per_step(norms: list[float | None], start: int = 1) -> float | None:
    """
    Per-step ratio of the gradient norm, 10 ** slope of the least-squares line through log10(norm) against the
    distance d for d >= `start` (d = 0 is skipped by default: there the last layer also has its direct path to
    the loss). 1.0 means no decay with distance; 0.5 means the norm halves with every step back.
    """
    points = [(d, math.log10(v)) for d, v in enumerate(norms) if d >= start and v is not None and v > 0]
    if len(points) < 2:
        return None
    mean_d = sum(d for d, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = sum((d - mean_d) * (y - mean_y) for d, y in points) / sum((d - mean_d) ** 2 for d, _ in points)
    return 10**slope


def gradient_flow(
    model,
    input_ids: torch.LongTensor,
    targets: torch.LongTensor,
    *,
    label: str = "model",
    dtype=torch.float64,
    window: int | None = None,
) -> GradientFlow:
    """
    Measure the gradient flow of `model` on `input_ids` (B, T) with next tokens `targets` (B,): per series the
    norm at each distance d = T - t (geometric mean over the B sequences) and the fitted per-step decay. `window`:
    see `position_gradients`.
    """
    loss, vectors, diagnostics = position_gradients(model, input_ids, targets, dtype=dtype, window=window)
    norms: dict[str, list[float | None]] = {}
    decay: dict[str, float | None] = {}
    for name, grad in vectors.items():
        per_position = grad.norm(dim=-1)  # (B, T)
        by_distance = per_position.flip(1)  # column d is position T - 1 - d (0-based), i.e. distance d
        logs = by_distance.log10()  # -inf where exactly zero
        mean = logs.mean(dim=0)  # (T,)
        exact = [10 ** float(v) if torch.isfinite(v) else None for v in mean]
        decay[name] = decay_per_step(exact)
        # 4 significant digits: plenty for a log plot, and keeps the JSON small
        norms[name] = [float(f"{v:.4g}") if v is not None else None for v in exact]
    config = model.config
    info = {
        "model_type": config.model_type,
        "cell_type": getattr(config, "cell_type", None),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "sequence_length": input_ids.shape[1],
        "num_sequences": input_ids.shape[0],
        "diagnostics": diagnostics,
    }
    return GradientFlow(label=label, norms=norms, decay=decay, loss=float(loss.detach()) / input_ids.shape[0], info=info)


def corpus_sequences(tokens: torch.LongTensor, length: int, *, num_sequences: int = 1, offset: int = 0):
    """
    Cut `num_sequences` consecutive, non-overlapping windows of `length + 1` tokens from a token stream (N,),
    starting at `offset`. Returns `(input_ids (B, length), targets (B,))`: the target is each window's last token.
    """
    need = offset + num_sequences * (length + 1)
    if length < 2 or num_sequences < 1 or offset < 0:
        raise UserError(f"need length >= 2, num_sequences >= 1, offset >= 0; got {length}, {num_sequences}, {offset}.")
    if need > tokens.numel():
        raise UserError(
            f"the token stream has {tokens.numel()} tokens but offset {offset} + {num_sequences} windows of "
            f"{length + 1} tokens need {need}; use a shorter --sequence_length, fewer sequences, a smaller offset "
            "or a larger split."
        )
    windows = tokens[offset:need].view(num_sequences, length + 1)  # (B, T + 1)
    return windows[:, :-1].clone(), windows[:, -1].clone()


def random_sequences(vocab_size: int, length: int, *, num_sequences: int = 1, seed: int = 0):
    """Uniformly random tokens: `(input_ids (B, length), targets (B,))`, reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    windows = torch.randint(0, vocab_size, (num_sequences, length + 1), generator=generator)
    return windows[:, :-1], windows[:, -1]


# Line style per kind of series, colour per model: several models stay readable in one panel. `c_carried` is in
# the JSON only (it tracks `c` closely except at d = 0 and would double the lines).
_STYLES = {"h": "-", "c": "--"}


def plot_gradient_flow(groups: list[tuple[str, list[GradientFlow]]], path, *, title: str | None = None) -> None:
    """
    Write a PNG: one row per group (e.g. "at initialisation", "after training"), two panels per row: the input
    embedding of every model, and every layer's hidden/cell state. log10 norm against the distance T - t.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.8 * len(groups)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = sorted({flow.label for _, flows in groups for flow in flows}, key=[f.label for _, fl in groups for f in fl].index)
    for row, (group_title, flows) in enumerate(groups):
        left, right = axes[row]
        for flow in flows:
            colour = colours[labels.index(flow.label) % len(colours)]
            for name, values in flow.norms.items():
                points = [(d, math.log10(v)) for d, v in enumerate(values) if v is not None and v > 0]
                if not points:
                    continue
                xs, ys = zip(*points)
                if name == "embedding":
                    left.plot(xs, ys, color=colour, label=flow.label)
                    continue
                layer, kind = name.split(".", 1)
                if kind not in _STYLES:
                    continue
                width = 1.0 + 0.8 * (int(layer.removeprefix("layer")) - 1)
                right.plot(xs, ys, color=colour, linestyle=_STYLES[kind], linewidth=width,
                           label=f"{flow.label} {name}")
        left.set_title(f"{group_title}: input embedding", fontsize=10)
        right.set_title(f"{group_title}: per layer (h solid, LSTM c dashed, thick = upper)", fontsize=10)
        for ax in (left, right):
            ax.set_xlabel("distance T - t (tokens)")
            ax.set_ylabel("log10 ||dL_T / d·_t||")
            ax.grid(alpha=0.3)
        left.legend(fontsize=8)
        right.legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
