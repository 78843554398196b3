"""Test-time adaptation: dynamic evaluation (`hwlm.evaluation.dynamic_eval`) and the neural cache
(`hwlm.evaluation.neural_cache`), alone or together, in one pass over a split, and their tuning on validation.

Both read the evaluated text once, in order, and use only what they have already scored, so the figure is
still a proper (causal) perplexity; neither needs retraining. The layout is `hwlm.evaluation.segments`'.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time

import torch

from hwlm.evaluation.dynamic_eval import DynamicEvalSettings, DynamicEvaluator
from hwlm.evaluation.neural_cache import NeuralCache, NeuralCacheSettings
from hwlm.evaluation.segments import forward_segment, process_info, reduce_sums, segments
from hwlm.model_building import supports_state_carrying
from hwlm.errors import UserError

__all__ = ["adaptive_loss_sums", "adaptive_pass", "evaluate_adaptive", "tune_on_validation"]


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
        length: tokens per segment (stream window, or sliding-window stride); see `segments`.
        evaluator (`DynamicEvaluator`, *optional*): take one update after each scored segment.
        cache (`NeuralCache`, *optional*): also score the cache mixture for each of its (θ, λ).

    Returns:
        ``{"model": summed NLL of the (adapted) model, "cache": (G_θ, G_λ) sums or None, "num_tokens": int}``.
    """
    model = evaluator.model if evaluator is not None else net
    carry = supports_state_carrying(model)
    total, count, state = torch.zeros((), dtype=torch.float64), 0, None
    cache_total = None
    for x, y in segments(
        model, tokens, batch_size=batch_size, length=length, window=window, num_processes=num_processes,
        process_index=process_index, pad_token_id=pad_token_id,
    ):
        x, y = x.to(device), y.to(device)
        n = int((y != -100).sum())
        with torch.set_grad_enabled(evaluator is not None), autocast() if autocast else contextlib.nullcontext():
            loss_sum, state, cache_inputs = forward_segment(
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
    net, device, P, r, autocast = process_info(model, accelerator)
    if dynamic is not None and rms is None:
        raise UserError("dynamic evaluation needs the gradient statistics `rms` (see gradient_statistics)")
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
    total, count, grid = reduce_sums(accelerator, device, sums["model"], torch.tensor(float(sums["num_tokens"])), grid)
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
        raise UserError("evaluate_adaptive needs `dynamic` and/or `cache` settings; use evaluate_perplexity otherwise")
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    window = window or (None if supports_state_carrying(net) else int(net.config.max_position_embeddings))
    if dynamic is not None:
        length = dynamic.dynamic_eval_segment_length
    else:
        length = bptt if supports_state_carrying(net) else (stride or max(window // 2, 1))
    if window is not None and length > window:  # before any compute (the statistics may have cost minutes)
        raise UserError(
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

