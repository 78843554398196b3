"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, arXiv:1709.07432, the "RMS with global prior"
variant): after scoring each segment of ``s`` tokens, take one gradient step on that segment's
mean loss, normalised per weight by the root mean square ``RMS`` of the gradient over the training split,
and decay every weight back towards its trained value ``θ0``::

    θ ← θ - η g / (RMS + ε) + λ d ⊙ (θ0 - θ),    d = min(RMS / mean(RMS), 1/λ)

where ``mean(RMS)`` is the mean over parameter tensors of each tensor's mean RMS (the "global" scale of
their code, ``benkrause/dynamic-evaluation``). The adaptation runs on a private copy of the model, so
neither the model passed in nor the folder it came from ever changes. The pass that scores a split with it is
`hwlm.evaluation.test_time`.
"""

from __future__ import annotations

import math

import torch

from hwlm.model_building import supports_state_carrying
from hwlm.settings import DynamicEvalSettings  # re-exported: defined where --help reads it
from hwlm.evaluation.segments import forward_segment, private_copy, process_info, reduce_sums, segments
from hwlm.errors import UserError

__all__ = ["DynamicEvalSettings", "DynamicEvaluator", "gradient_statistics", "gradient_square_sums",
           "rms_from_square_sums"]


def gradient_square_sums(
    model,
    tokens: torch.Tensor,
    settings: DynamicEvalSettings,
    *,
    device: torch.device | str = "cpu",
    num_processes: int = 1,
    process_index: int = 0,
    window: int | None = None,
    pad_token_id: int = 0,
) -> tuple[dict[str, torch.Tensor], int]:
    """This process's sums of squared gradients over its part of the training split ``tokens`` (N,).

    As in Krause et al.'s ``gradstat``: batches of ``dynamic_eval_stats_batch_size`` streams (or windows)
    of ``dynamic_eval_segment_length`` scored tokens, the gradient of each batch's mean loss, eval mode (no
    dropout), at most ``ceil(dynamic_eval_stats_max_batches / num_processes)`` batches.
    Returns ``({parameter name: float64 sum of g², parameter shape}, number of batches)``.
    """
    twin = private_copy(model)
    names, params = zip(*twin.named_parameters())
    squares = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    carry, state, batches = supports_state_carrying(twin), None, 0
    cap = settings.dynamic_eval_stats_max_batches
    per_process_cap = math.ceil(cap / num_processes) if cap else None
    for x, y in segments(
        twin, tokens, batch_size=settings.dynamic_eval_stats_batch_size, length=settings.dynamic_eval_segment_length,
        window=window, num_processes=num_processes, process_index=process_index, pad_token_id=pad_token_id,
        pad_to_full=False,
    ):
        x, y = x.to(device), y.to(device)
        n = int((y != -100).sum())
        loss_sum, state, _ = forward_segment(twin, x, y, state, carry=carry, with_cache=False)
        grads = torch.autograd.grad(loss_sum / max(n, 1), params, allow_unused=True)
        for sq, g in zip(squares, grads):
            if g is not None:
                sq += g.double() ** 2
        state = state.detach() if state is not None else None
        batches += 1
        if per_process_cap and batches >= per_process_cap:
            break
    return dict(zip(names, squares)), batches


def rms_from_square_sums(squares: dict[str, torch.Tensor], batches: int) -> dict[str, torch.Tensor]:
    """``sqrt(sum g² / batches)`` per parameter (float32)."""
    if batches < 1:
        raise UserError("the training split is too short for one gradient-statistics batch; lower "
                         "--dynamic_eval_stats_batch_size or --dynamic_eval_segment_length")
    return {name: (sq / batches).sqrt().float() for name, sq in squares.items()}


def gradient_statistics(
    model,
    tokens: torch.Tensor,
    settings: DynamicEvalSettings,
    *,
    accelerator=None,
    window: int | None = None,
    pad_token_id: int = 0,
) -> dict[str, torch.Tensor]:
    """Root mean square of each parameter's gradient over the training split ``tokens`` (N,).

    Every process covers its own part (`gradient_square_sums`); the sums are reduced, so all processes get
    the same statistics. Returns ``{parameter name: RMS tensor of the parameter's shape}``.
    """
    net, device, P, r, _ = process_info(model, accelerator)
    squares, batches = gradient_square_sums(
        net, tokens, settings, device=device, num_processes=P, process_index=r, window=window, pad_token_id=pad_token_id
    )
    names = list(squares)
    *reduced, total = reduce_sums(accelerator, device, *squares.values(), torch.tensor(float(batches)))
    return rms_from_square_sums(dict(zip(names, reduced)), int(round(float(total))))


class DynamicEvaluator:
    """Krause et al.'s RMS update with global decay to the trained weights, on a private copy of ``model``.

    Args:
        model: the trained causal LM (unwrapped); it is copied, never modified.
        rms (`dict[str, torch.Tensor]`): from `gradient_statistics`, one tensor per parameter name.
        settings (`DynamicEvalSettings`): η, λ, ε.
    """

    def __init__(self, model, rms: dict[str, torch.Tensor], settings: DynamicEvalSettings):
        self.model = private_copy(model)
        self.settings = settings
        self.names, self.params = zip(*self.model.named_parameters())
        missing = [n for n in self.names if n not in rms]
        if missing:
            raise UserError(
                f"the gradient statistics lack {len(missing)} parameters of this model (e.g. {missing[:3]}); "
                "compute them with gradient_statistics(model, train_tokens, settings) for this very model"
            )
        self.trained = [p.detach().clone() for p in self.params]
        self.rms = [rms[n].to(p.device, p.dtype) for n, p in zip(self.names, self.params)]
        # -η / (RMS + ε), fixed during the pass: the gradient step is then one multiply-add per weight.
        eta, eps = settings.dynamic_eval_learning_rate, settings.dynamic_eval_epsilon
        self.gradient_scale = [-eta / (v + eps) for v in self.rms]
        global_rms = sum(float(v.mean()) for v in self.rms) / len(self.rms)
        lam = settings.dynamic_eval_decay_rate
        # Per-weight decay λ·RMS/mean(RMS), clipped at 1 so that the decay never overshoots θ0 (their code).
        self.decay = [lam * (v / global_rms).clamp(max=1.0 / lam) if lam > 0 else torch.zeros_like(v) for v in self.rms]

    def step(self, loss: torch.Tensor) -> None:
        """One update from ``loss`` (a scalar, the mean loss of the segment just scored)."""
        # materialize_grads: a parameter the segment did not reach gets a zero gradient (it still decays).
        grads = torch.autograd.grad(loss, self.params, materialize_grads=True)
        params = list(self.params)
        with torch.no_grad():
            # Multi-tensor (foreach) ops, three passes over the weights: the update runs every few tokens, and on a
            # CPU it is bound by memory traffic.
            delta = torch._foreach_sub(self.trained, params)  # θ0 - θ, from the weights before this step
            torch._foreach_addcmul_(params, delta, self.decay)  # + λ d (θ0 - θ)
            torch._foreach_addcmul_(params, list(grads), self.gradient_scale)  # - η g / (RMS + ε)

    def reset(self) -> None:
        """Back to the trained weights (between splits or grid points)."""
        with torch.no_grad():
            for p, p0 in zip(self.params, self.trained):
                p.copy_(p0)
