"""How the test-time methods read a split: segments in text order, one forward each, and the features the output
layer reads.

State-carrying models read ``batch_size`` contiguous streams per process (each with its own state; ``batch_size=1``
is the literature's single-stream figure); other models read sliding windows in text order, and the targets each
window scores for the first time are the segment. Each process adapts on its own contiguous part; the summed
losses are reduced over processes (`reduce_sums`).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.nn as nn

from hwlm.batching import StreamLoader, sliding_window_batches
from hwlm.model_building import supports_state_carrying
from hwlm.errors import UserError

__all__ = ["segments", "head_inputs", "forward_segment", "private_copy", "process_info", "reduce_sums"]


def segments(
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
        raise UserError(f"the segment length ({length}) must not exceed the sliding window ({window})")
    yield from sliding_window_batches(
        tokens, window=window, stride=length, batch_size=batch_size, num_processes=num_processes,
        process_index=process_index, pad_token_id=pad_token_id,
    )


@contextlib.contextmanager
def head_inputs(net):
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


def forward_segment(net, x, y, state, *, carry: bool, with_cache: bool):
    """One forward. Returns ``(loss_sum, state, cache_inputs)``: the summed NLL (differentiable when grad is on),
    the carried state, and for the cache ``(features (B,T,D), log p_vocab(target) (B,T))`` detached, or None."""
    if not with_cache:
        # num_items_in_batch=1 makes the model's loss the plain sum: bit-identical to hwlm.evaluation.
        out = net(input_ids=x, shift_labels=y, num_items_in_batch=1, cache=state, use_cache=carry)
        return out.loss, (out.cache if carry else None), None
    with head_inputs(net) as seen:
        # Without labels the output carries every position's logits (log-probs for an adaptive softmax).
        out = net(input_ids=x, cache=state, use_cache=carry)
    features = seen[-1].reshape(*x.shape, -1)  # (B, T, D)
    log_probs = torch.log_softmax(out.logits.float(), dim=-1)  # (B, T, V)
    scored = y != -100
    log_p = log_probs.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~scored, 0.0)  # (B, T)
    return -log_p.sum(), (out.cache if carry else None), (features.detach(), log_p.detach())


def private_copy(net) -> nn.Module:
    """A copy in eval mode whose weights take gradients; the caller's model is never touched."""
    twin = copy.deepcopy(net).eval()
    for p in twin.parameters():
        p.requires_grad_(True)
    return twin


def process_info(model, accelerator):
    """(unwrapped model, device, num_processes, process_index, autocast) of the current process."""
    if accelerator is None:
        return model, next(model.parameters()).device, 1, 0, None
    return (accelerator.unwrap_model(model), accelerator.device, accelerator.num_processes,
            accelerator.process_index, accelerator.autocast)


def reduce_sums(accelerator, device, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Sum float64 tensors over processes (one collective for all of them)."""
    flat = torch.cat([t.reshape(-1).double() for t in tensors]).to(device)
    if accelerator is not None and accelerator.num_processes > 1:
        flat = accelerator.reduce(flat, reduction="sum")
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view(t.shape).cpu())
        offset += t.numel()
    return out
