"""Test-time adaptation: dynamic evaluation and the neural cache pointer.

Both read the evaluated text once, in order, and use only what they have already scored, so the figure is
still a proper (causal) perplexity; neither needs retraining.

*Dynamic evaluation* (Krause, Kahembwe, Murray & Renals 2018, arXiv:1709.07432, the "RMS with global
prior" variant): after scoring each segment of ``s`` tokens, take one gradient step on that segment's
mean loss, normalised per weight by the root mean square ``RMS`` of the gradient over the training split,
and decay every weight back towards its trained value ``θ0``::

    θ ← θ - η g / (RMS + ε) + λ d ⊙ (θ0 - θ),    d = min(RMS / mean(RMS), 1/λ)

where ``mean(RMS)`` is the mean over parameter tensors of each tensor's mean RMS (the "global" scale of
their code, ``benkrause/dynamic-evaluation``). The adaptation runs on a private copy of the model, so
neither the model passed in nor the folder it came from ever changes.

*Neural cache* (Grave, Joulin & Usunier 2017, arXiv:1612.04426): keep the last ``cache_size`` pairs
(h_i, x_{i+1}) of hidden state and next word, and mix::

    p(w | h_t) = (1 - λ) p_vocab(w | h_t) + λ p_cache(w | h_t),
    p_cache(w | h_t) ∝ Σ_{i: x_{i+1} = w} exp(θ h_t · h_i)      (i over the last cache_size positions < t)

``h`` is what the output layer reads (captured at the head's input, so it is the final-norm output of the
Transformer and the projected state of a recurrent model whose tied embedding is narrower than its
hidden size). A position with an empty cache (the very first of a stream) uses p_vocab alone.

Layout follows ``hwlm.evaluation``: state-carrying models read ``batch_size`` contiguous streams per
process (each with its own state and cache; ``batch_size=1`` is the literature's single-stream figure);
other models read sliding windows in text order, and the targets each window scores for the first time
are the segment. Each process adapts on its own contiguous part; the summed losses are reduced with
``accelerator.reduce``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from typing import Iterator

import torch
import torch.nn as nn

from hwlm.batching import StreamLoader, sliding_window_batches
from hwlm.modeling import supports_state_carrying
from hwlm.settings import DynamicEvalSettings, NeuralCacheSettings  # re-exported: defined where --help reads them

__all__ = [
    "DynamicEvalSettings",
    "NeuralCacheSettings",
    "DynamicEvaluator",
    "NeuralCache",
    "gradient_statistics",
    "gradient_square_sums",
    "rms_from_square_sums",
    "tune_on_validation",
    "pointer_weights",
    "cache_distribution",
    "adaptive_loss_sums",
    "evaluate_adaptive",
]


# --------------------------------------------------------------------------------------------------- segments


def _segments(
    net, tokens: torch.Tensor, *, batch_size: int, length: int, window: int | None, num_processes: int,
    process_index: int, pad_token_id: int, pad_to_full: bool = True,
) -> Iterator[tuple[torch.LongTensor, torch.LongTensor]]:
    """``(input_ids, shift_labels)`` (B, T) in text order: stream windows of ``length`` tokens for
    state-carrying models, else sliding windows of ``window`` tokens whose last ``length`` targets are scored."""
    if supports_state_carrying(net):
        loader = StreamLoader(
            tokens, batch_size=batch_size, bptt=length, num_processes=num_processes, process_index=process_index,
            pad_to_full=pad_to_full, pad_token_id=pad_token_id,
        )
        for w in loader:
            yield w.input_ids, w.shift_labels
        return
    window = window or int(net.config.max_position_embeddings)
    if length > window:
        raise ValueError(f"the segment length ({length}) must not exceed the sliding window ({window})")
    yield from sliding_window_batches(
        tokens, window=window, stride=length, batch_size=batch_size, num_processes=num_processes,
        process_index=process_index, pad_token_id=pad_token_id,
    )


@contextlib.contextmanager
def _head_inputs(net):
    """Capture what the output layer reads, for every head: the `nn.Linear` of a full softmax, or the first-level
    `nn.Linear` that `nn.AdaptiveLogSoftmaxWithLoss.log_prob` feeds with the same features. Yields a list that
    holds the (…, D) features of the last forward."""
    head = net.get_output_embeddings()
    if head is None:
        head = net.lm_head.head  # adaptive softmax: log_prob(x) starts with self.head(x)
    seen: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


def _forward_segment(net, x, y, state, *, carry: bool, with_cache: bool):
    """One forward. Returns ``(loss_sum, state, cache_inputs)``: the summed NLL (differentiable when grad is on),
    the carried state, and for the cache ``(features (B,T,D), log p_vocab(target) (B,T))`` detached, or None."""
    if not with_cache:
        # num_items_in_batch=1 makes the model's loss the plain sum: bit-identical to hwlm.evaluation.
        out = net(input_ids=x, shift_labels=y, num_items_in_batch=1, cache=state, use_cache=carry)
        return out.loss, (out.cache if carry else None), None
    with _head_inputs(net) as seen:
        # Without labels the output carries every position's logits (log-probs for an adaptive softmax).
        out = net(input_ids=x, cache=state, use_cache=carry)
    features = seen[-1].reshape(*x.shape, -1)  # (B, T, D)
    log_probs = torch.log_softmax(out.logits.float(), dim=-1)  # (B, T, V)
    scored = y != -100
    log_p = log_probs.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~scored, 0.0)  # (B, T)
    return -log_p.sum(), (out.cache if carry else None), (features.detach(), log_p.detach())


# ------------------------------------------------------------------------------------------- dynamic evaluation


def _private_copy(net) -> nn.Module:
    """A copy in eval mode whose weights take gradients; the caller's model is never touched."""
    twin = copy.deepcopy(net).eval()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


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
    twin = _private_copy(model)
    names, params = zip(*twin.named_parameters())
    squares = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    carry, state, batches = supports_state_carrying(twin), None, 0
    cap = settings.dynamic_eval_stats_max_batches
    per_process_cap = math.ceil(cap / num_processes) if cap else None
    for x, y in _segments(
        twin, tokens, batch_size=settings.dynamic_eval_stats_batch_size, length=settings.dynamic_eval_segment_length,
        window=window, num_processes=num_processes, process_index=process_index, pad_token_id=pad_token_id,
        pad_to_full=False,
    ):
        x, y = x.to(device), y.to(device)
        n = int((y != -100).sum())
        loss_sum, state, _ = _forward_segment(twin, x, y, state, carry=carry, with_cache=False)
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
        raise ValueError("the training split is too short for one gradient-statistics batch; lower "
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
    net, device, P, r, _ = _process_info(model, accelerator)
    squares, batches = gradient_square_sums(
        net, tokens, settings, device=device, num_processes=P, process_index=r, window=window, pad_token_id=pad_token_id
    )
    names = list(squares)
    *reduced, total = _reduce(accelerator, device, *squares.values(), torch.tensor(float(batches)))
    return rms_from_square_sums(dict(zip(names, reduced)), int(round(float(total))))


class DynamicEvaluator:
    """Krause et al.'s RMS update with global decay to the trained weights, on a private copy of ``model``.

    Args:
        model: the trained causal LM (unwrapped); it is copied, never modified.
        rms (`dict[str, torch.Tensor]`): from `gradient_statistics`, one tensor per parameter name.
        settings (`DynamicEvalSettings`): η, λ, ε.
    """

    def __init__(self, model, rms: dict[str, torch.Tensor], settings: DynamicEvalSettings):
        self.model = _private_copy(model)
        self.settings = settings
        self.names, self.params = zip(*self.model.named_parameters())
        missing = [n for n in self.names if n not in rms]
        if missing:
            raise ValueError(
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


# ---------------------------------------------------------------------------------------------------- neural cache


def pointer_weights(
    queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor, *, num_past: int, cache_size: int, theta: float
) -> torch.Tensor:
    """Cache attention of each query over the keys before it.

    Args:
        queries (`torch.Tensor` of shape (S, T, D)): hidden states at positions ``num_past ... num_past+T-1``.
        keys (`torch.Tensor` of shape (S, K, D)): the states at positions ``0 ... K-1`` (the history, then the
            queries' own states; K = num_past + T).
        key_valid (`torch.BoolTensor` of shape (S, K)): False for padding.
        num_past (`int`): number of history keys before the first query.
        cache_size (`int`) / theta (`float`): query t attends to the valid keys j with t - cache_size <= j < t.

    Returns:
        `torch.Tensor` of shape (S, T, K): softmax of ``θ q·k`` over the allowed keys, 0 elsewhere; a query
        with no allowed key gets a row of zeros.
    """
    num_queries, num_keys = queries.size(1), keys.size(1)
    scores = theta * torch.einsum("std,skd->stk", queries.float(), keys.float())  # (S, T, K)
    key_pos = torch.arange(num_keys, device=keys.device)  # (K,)
    query_pos = num_past + torch.arange(num_queries, device=keys.device)  # (T,)
    allowed = (key_pos[None, :] < query_pos[:, None]) & (key_pos[None, :] >= query_pos[:, None] - cache_size)  # (T, K)
    allowed = allowed[None] & key_valid[:, None, :]  # (S, T, K)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * allowed  # rows with nothing allowed: uniform * 0 = 0


def cache_distribution(weights: torch.Tensor, key_targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """p_cache over the vocabulary (S, T, V) from `pointer_weights` (S, T, K) and the keys' next words (S, K)."""
    index = key_targets.clamp(min=0)[:, None, :].expand_as(weights)  # (S, T, K); invalid keys carry weight 0
    return torch.zeros(*weights.shape[:2], vocab_size, dtype=weights.dtype, device=weights.device).scatter_add_(
        -1, index, weights
    )


class NeuralCache:
    """The recent (hidden state, next word) pairs of each stream, and the mixture's summed NLL over a grid.

    Args:
        cache_size (`int`): pairs kept per stream.
        thetas / lambdas (sequences of `float`): the θ and λ to score at once (one setting: one value each);
            a whole grid costs one model pass, which is what tuning on validation uses.
    """

    def __init__(self, cache_size: int, thetas, lambdas):
        self.cache_size = cache_size
        self.thetas = [float(t) for t in thetas]
        self.lambdas = torch.tensor([float(v) for v in lambdas], dtype=torch.float64)  # (G_λ,)
        self.reset()

    def reset(self) -> None:
        self.keys = self.key_targets = self.key_valid = None

    def score(self, features: torch.Tensor, log_p_vocab: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed -log p of the mixture for each (θ, λ), then add this segment to the cache.

        Args:
            features (`torch.Tensor` of shape (S, T, D)): what the output layer read, per stream.
            log_p_vocab (`torch.Tensor` of shape (S, T)): the model's log-probability of each target.
            targets (`torch.LongTensor` of shape (S, T)): next words; -100 marks padding (not scored, not cached).

        Returns:
            `torch.Tensor` of shape (G_θ, G_λ), float64.
        """
        valid = targets != -100  # (S, T)
        if self.keys is None:
            self.keys = features[:, :0]
            self.key_targets, self.key_valid = targets[:, :0], valid[:, :0]
        num_past = self.keys.size(1)
        keys = torch.cat([self.keys, features], dim=1)  # (S, C+T, D)
        key_targets = torch.cat([self.key_targets, targets], dim=1)  # (S, C+T)
        key_valid = torch.cat([self.key_valid, valid], dim=1)  # (S, C+T)
        hits = key_targets[:, None, :] == targets[:, :, None]  # (S, T, C+T): key j's next word is query t's target
        lambdas = self.lambdas.to(features.device)
        log_vocab = log_p_vocab.double()[None] + torch.log1p(-lambdas)[:, None, None]  # (G_λ, S, T)
        sums = []
        for theta in self.thetas:
            w = pointer_weights(features, keys, key_valid, num_past=num_past, cache_size=self.cache_size, theta=theta)
            p_cache = (w * hits).sum(-1).double()  # (S, T)
            has_cache = w.sum(-1) > 0  # (S, T)
            mixed = torch.logaddexp(log_vocab, torch.log(lambdas)[:, None, None] + torch.log(p_cache)[None])
            mixed = torch.where(has_cache[None], mixed, log_p_vocab.double()[None])  # (G_λ, S, T)
            sums.append(-(mixed * valid[None]).sum(dim=(1, 2)))
        keep = min(keys.size(1), self.cache_size)
        self.keys, self.key_targets, self.key_valid = keys[:, -keep:], key_targets[:, -keep:], key_valid[:, -keep:]
        return torch.stack(sums).cpu()  # (G_θ, G_λ)


# ------------------------------------------------------------------------------------------------------ the pass


def adaptive_loss_sums(
    net,
    tokens: torch.Tensor,
    *,
    length: int,
    batch_size: int = 1,
    window: int | None = None,
    device: torch.device | str = "cpu",
    num_processes: int = 1,
    process_index: int = 0,
    pad_token_id: int = 0,
    autocast=None,
    evaluator: DynamicEvaluator | None = None,
    cache: NeuralCache | None = None,
) -> dict:
    """One pass over this process's part of ``tokens`` (N,), scoring each segment before adapting to it.

    Args:
        net: the trained model (unused for the forward when ``evaluator`` is given: its copy adapts instead).
        length: tokens per segment (stream window, or sliding-window stride); see `_segments`.
        evaluator (`DynamicEvaluator`, *optional*): take one update after each scored segment.
        cache (`NeuralCache`, *optional*): also score the cache mixture for each of its (θ, λ).

    Returns:
        ``{"model": summed NLL of the (adapted) model, "cache": (G_θ, G_λ) sums or None, "num_tokens": int}``.
    """
    model = evaluator.model if evaluator is not None else net
    carry = supports_state_carrying(model)
    total, count, state = torch.zeros((), dtype=torch.float64), 0, None
    cache_total = None
    for x, y in _segments(
        model, tokens, batch_size=batch_size, length=length, window=window, num_processes=num_processes,
        process_index=process_index, pad_token_id=pad_token_id,
    ):
        x, y = x.to(device), y.to(device)
        n = int((y != -100).sum())
        with torch.set_grad_enabled(evaluator is not None), autocast() if autocast else contextlib.nullcontext():
            loss_sum, state, cache_inputs = _forward_segment(
                model, x, y, state, carry=carry, with_cache=cache is not None
            )
        if cache_inputs is not None:
            features, log_p = cache_inputs
            if not carry:  # sliding windows: the scored targets of the batch, in text order, are one stream
                scored = y != -100
                features, log_p, y_cache = features[scored][None], log_p[scored][None], y[scored][None]
            else:
                y_cache = y
            sums = cache.score(features, log_p, y_cache)
            cache_total = sums if cache_total is None else cache_total + sums
        if n:
            total += loss_sum.detach().double().cpu()
            count += n
            if evaluator is not None:
                evaluator.step(loss_sum / n)  # the segment's mean loss, as in Krause et al.
        state = state.detach() if state is not None else None
    return {"model": total, "cache": cache_total, "num_tokens": count}


# ------------------------------------------------------------------------------------------------ entry points


def _process_info(model, accelerator):
    """(unwrapped model, device, num_processes, process_index, autocast) of the current process."""
    if accelerator is None:
        return model, next(model.parameters()).device, 1, 0, None
    return (accelerator.unwrap_model(model), accelerator.device, accelerator.num_processes,
            accelerator.process_index, accelerator.autocast)


def _reduce(accelerator, device, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum float64 tensors over processes (one collective for all of them)."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).to(device)
    if accelerator is not None and accelerator.num_processes > 1:
        flat = accelerator.reduce(flat, reduction="sum")
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view(t.shape).cpu())
        offset += t.numel()
    return out


def _exp(loss: float) -> float:
    """Perplexity from a mean loss; a diverged pass (a learning rate too high) gives inf, not an OverflowError."""
    return math.exp(min(loss, 700.0)) if not math.isnan(loss) else math.nan


def _rank(perplexity: float) -> float:
    """Sort key for tuning: a NaN (diverged) perplexity ranks last."""
    return math.inf if math.isnan(perplexity) else perplexity


def _ppl(loss_sum: float, count: int) -> tuple[float, float]:
    loss = loss_sum / max(count, 1)
    return loss, _exp(loss)


def adaptive_pass(
    model,
    tokens: torch.Tensor,
    *,
    accelerator=None,
    batch_size: int = 1,
    length: int,
    window: int | None = None,
    pad_token_id: int = 0,
    dynamic: DynamicEvalSettings | None = None,
    rms: dict[str, torch.Tensor] | None = None,
    cache_size: int | None = None,
    thetas=(),
    lambdas=(),
) -> dict:
    """One pass (dynamic evaluation and/or a grid of cache settings), reduced over processes.

    Returns ``{"model": (loss, perplexity), "cache": (G_θ, G_λ) mean losses or None, "num_tokens", "seconds"}``.
    """
    net, device, P, r, autocast = _process_info(model, accelerator)
    if dynamic is not None and rms is None:
        raise ValueError("dynamic evaluation needs the gradient statistics `rms` (see gradient_statistics)")
    evaluator = DynamicEvaluator(net, rms, dynamic) if dynamic is not None else None
    cache = NeuralCache(cache_size, thetas, lambdas) if cache_size else None
    was_training = net.training
    net.eval()
    start = time.perf_counter()
    try:
        sums = adaptive_loss_sums(
            net, tokens, length=length, batch_size=batch_size, window=window, device=device, num_processes=P,
            process_index=r, pad_token_id=pad_token_id, autocast=autocast, evaluator=evaluator, cache=cache,
        )
    finally:
        net.train(was_training)
    grid = sums["cache"] if sums["cache"] is not None else torch.zeros(0, dtype=torch.float64)
    total, count, grid = _reduce(accelerator, device, sums["model"], torch.tensor(float(sums["num_tokens"])), grid)
    count = int(round(float(count)))
    return {
        "model": _ppl(float(total), count),
        "cache": grid / max(count, 1) if cache is not None else None,
        "num_tokens": count,
        "seconds": time.perf_counter() - start,
    }


def evaluate_adaptive(
    model,
    tokens: torch.Tensor,
    *,
    accelerator=None,
    batch_size: int = 1,
    bptt: int = 100,
    window: int | None = None,
    stride: int | None = None,
    pad_token_id: int = 0,
    dynamic: DynamicEvalSettings | None = None,
    rms: dict[str, torch.Tensor] | None = None,
    cache: NeuralCacheSettings | None = None,
) -> dict:
    """Perplexity of ``model`` on ``tokens`` (N,) with dynamic evaluation and/or the neural cache.

    Args:
        model: a trained causal LM (possibly accelerate-wrapped); never modified.
        tokens (`torch.LongTensor` of shape (N,)): the split.
        accelerator (`accelerate.Accelerator`, *optional*): each process adapts on its own part; sums are reduced.
        batch_size: streams (state-carrying models) or windows per forward, per process.
        bptt / stride: segment length of a cache-only pass (streams / sliding window; speed only for streams);
            with ``dynamic`` the segment is ``dynamic.dynamic_eval_segment_length`` instead.
        window: sliding window of non-recurrent models (default ``max_position_embeddings``).
        dynamic / rms: dynamic evaluation settings and `gradient_statistics` of the training split.
        cache: neural cache settings.

    Returns:
        With ``dynamic``: ``dynamic_eval_{loss,perplexity}``; with ``cache`` alone: ``neural_cache_{...}``;
        with both: ``dynamic_eval_{...}`` and ``dynamic_eval_neural_cache_{...}`` (the cache rides the same
        adapted pass); plus ``num_tokens`` and ``seconds``.
    """
    if dynamic is None and cache is None:
        raise ValueError("evaluate_adaptive needs `dynamic` and/or `cache` settings; use evaluate_perplexity otherwise")
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    window = window or (None if supports_state_carrying(net) else int(net.config.max_position_embeddings))
    if dynamic is not None:
        length = dynamic.dynamic_eval_segment_length
    else:
        length = bptt if supports_state_carrying(net) else (stride or max(window // 2, 1))
    if window is not None and length > window:  # before any compute (the statistics may have cost minutes)
        raise ValueError(
            f"the segment length ({length}) must not exceed the sliding window ({window}); lower "
            "--dynamic_eval_segment_length / --eval_stride or raise --eval_window"
        )
    res = adaptive_pass(
        model, tokens, accelerator=accelerator, batch_size=batch_size, length=length, window=window,
        pad_token_id=pad_token_id, dynamic=dynamic, rms=rms,
        cache_size=cache.cache_size if cache else None,
        thetas=[cache.cache_theta] if cache else (), lambdas=[cache.cache_lambda] if cache else (),
    )
    out = {"num_tokens": res["num_tokens"], "seconds": res["seconds"]}
    if dynamic is not None:
        out["dynamic_eval_loss"], out["dynamic_eval_perplexity"] = res["model"]
    if cache is not None:
        prefix = "dynamic_eval_neural_cache" if dynamic is not None else "neural_cache"
        loss = float(res["cache"][0, 0])
        out[f"{prefix}_loss"], out[f"{prefix}_perplexity"] = loss, _exp(loss)
    return out


def _best_in_grid(grid: torch.Tensor, thetas, lambdas) -> tuple[float, float, float]:
    """(θ, λ, mean loss) of the lowest mean loss in a (G_θ, G_λ) grid (a NaN, from a diverged pass, never wins)."""
    flat = int(torch.argmin(torch.nan_to_num(grid, nan=math.inf)))
    i, j = divmod(flat, grid.size(1))
    return float(thetas[i]), float(lambdas[j]), float(grid[i, j])


def tune_on_validation(
    model,
    tokens: torch.Tensor,
    *,
    accelerator=None,
    batch_size: int = 1,
    bptt: int = 100,
    window: int | None = None,
    stride: int | None = None,
    pad_token_id: int = 0,
    dynamic: DynamicEvalSettings | None = None,
    rms: dict[str, torch.Tensor] | None = None,
    learning_rates=(),
    decay_rates=(),
    cache: NeuralCacheSettings | None = None,
    thetas=(),
    lambdas=(),
    max_tokens: int | None = None,
) -> dict:
    """Grid search on the validation tokens (N,) only; the test split is then scored once with the winners.

    The cache's whole θ × λ grid costs one pass (the mixture is cheap next to the model), so: one plain
    pass picks θ/λ for the cache alone; one dynamic pass per (learning rate, decay rate) picks those for
    dynamic evaluation, and the same passes pick θ/λ for the cache on top of the winning adaptation.

    Returns:
        ``{"dynamic": DynamicEvalSettings | None, "cache": NeuralCacheSettings | None (cache alone),
        "combined_cache": NeuralCacheSettings | None (cache with dynamic evaluation), "grid": [rows],
        "num_tokens": tokens used}``; each row holds the settings and the validation perplexity.
    """
    from dataclasses import replace

    tokens = tokens[:max_tokens] if max_tokens else tokens
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    stateful = supports_state_carrying(net)
    window = window or (None if stateful else int(net.config.max_position_embeddings))
    common = dict(accelerator=accelerator, batch_size=batch_size, window=window, pad_token_id=pad_token_id)
    cache_grid = dict(cache_size=cache.cache_size, thetas=thetas or [cache.cache_theta],
                      lambdas=lambdas or [cache.cache_lambda]) if cache else {}
    rows, out = [], {"dynamic": None, "cache": None, "combined_cache": None, "num_tokens": int(tokens.numel())}
    if cache is not None:
        length = bptt if stateful else (stride or max(window // 2, 1))
        res = adaptive_pass(model, tokens, length=length, **common, **cache_grid)
        grid = itertools.product(enumerate(cache_grid["thetas"]), enumerate(cache_grid["lambdas"]))
        for (i, theta), (j, lam) in grid:
            rows.append({"method": "neural_cache", "cache_theta": theta, "cache_lambda": lam,
                         "perplexity": _exp(float(res["cache"][i, j]))})
        theta, lam, _ = _best_in_grid(res["cache"], cache_grid["thetas"], cache_grid["lambdas"])
        out["cache"] = replace(cache, cache_theta=theta, cache_lambda=lam)
    if dynamic is not None:
        best = None
        for lr in learning_rates or [dynamic.dynamic_eval_learning_rate]:
            for decay in decay_rates or [dynamic.dynamic_eval_decay_rate]:
                settings = replace(dynamic, dynamic_eval_learning_rate=float(lr), dynamic_eval_decay_rate=float(decay))
                res = adaptive_pass(model, tokens, length=settings.dynamic_eval_segment_length, dynamic=settings,
                                    rms=rms, **common, **cache_grid)
                row = {"method": "dynamic_eval", "dynamic_eval_learning_rate": float(lr),
                       "dynamic_eval_decay_rate": float(decay), "perplexity": res["model"][1]}
                if cache is not None:
                    theta, lam, loss = _best_in_grid(res["cache"], cache_grid["thetas"], cache_grid["lambdas"])
                    row.update({"best_cache_theta": theta, "best_cache_lambda": lam,
                                "dynamic_eval_neural_cache_perplexity": _exp(loss)})
                rows.append(row)
                if best is None or _rank(row["perplexity"]) < _rank(best[0]["perplexity"]):
                    best = (row, settings)
        out["dynamic"] = best[1]
        if cache is not None:
            out["combined_cache"] = replace(cache, cache_theta=best[0]["best_cache_theta"],
                                            cache_lambda=best[0]["best_cache_lambda"])
    out["grid"] = rows
    return out
