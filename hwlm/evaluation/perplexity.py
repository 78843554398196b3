"""Perplexity per token, comparable with the language-modelling literature.

Every token of a split is a target except the first (nothing predicts it); ``<eos>`` tokens (one per
line, appended by the data pipeline) are targets like any word, as in the PTB and WikiText papers.
Per-token perplexity is ``exp(sum of token losses / number of scored tokens)``: losses are summed over
tokens on every process and reduced with ``accelerator.reduce(..., "sum")``, never averaged over
batches of unequal size.

Which method is used depends on what the model can do, not on its type:

* Models that carry state (``hwlm.model_building.supports_state_carrying``: the recurrent models) read the split as a stream with
  the state carried across windows, so every token is conditioned on the whole history before it.
  For speed the split is cut into ``batch_size`` contiguous streams read in parallel (per process),
  which restarts the state ``batch_size * num_processes - 1`` extra times; with ``batch_size=1`` on
  one process the figure is the exact single-stream number the literature reports (AWD-LSTM evaluates
  test with batch size 1). The window length only changes speed, not the result.
* Other models (the Transformer) use a sliding window of ``window`` tokens advanced by ``stride``:
  the first window scores all its tokens, each later window scores only its last ``stride`` tokens,
  each of which then sees at least ``window - stride`` tokens of context (the recipe in the
  transformers "Perplexity of fixed-length models" guide). ``stride == window`` gives disjoint
  blocks (fast, pessimistic); a smaller stride approaches the full-context figure.

Those are the ``"auto"`` protocol. ``evaluate_perplexity(..., protocol=...)`` can also force one, so that two models
are compared under the same rule:

* ``"stream"``: the carried-state stream above (state-carrying models only).
* ``"sliding_window"``: the sliding window above, for any model (nothing is carried from window to window).
* ``"chunks"``: the protocol of pytorch/examples ``word_language_model`` (its ``evaluate()``): the split cut into
  ``batch_size`` streams, each read in disjoint chunks of ``window`` tokens (default ``bptt``) with nothing carried
  from chunk to chunk, so the k-th target of a chunk is predicted from the k tokens of the chunk before it
  (1 to ``window`` tokens read, 0 to ``window - 1`` earlier than the last one). The layout is hwlm's streams
  (every target scored once); pytorch/examples instead drops the remainder of the split that does not fill its
  streams and the first target of each stream, a few tokens out of 82,000 on PTB.

`describe_protocol` says in words what a prediction reads under each protocol; the results READMEs use it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from hwlm.batching import StreamLoader, sliding_window_batches, sliding_windows
from hwlm.model_building import supports_state_carrying
from hwlm.errors import UserError

__all__ = [
    "supports_state_carrying",
    "evaluate_perplexity",
    "describe_protocol",
    "PROTOCOLS",
    "stream_loss_sum",
    "sliding_window_loss_sum",
    "sliding_window_batches",
    "sliding_windows",
]


PROTOCOLS = ("auto", "stream", "sliding_window", "chunks")


def describe_protocol(
    protocol: str,
    *,
    streams: int = 1,
    window: int | None = None,
    stride: int | None = None,
    memory_length: int | None = None,
    num_layers: int | None = None,
) -> str:
    """One sentence: how a split is read under ``protocol`` and how many tokens each prediction reads.

    Args:
        protocol: ``"stream"``, ``"sliding_window"`` or ``"chunks"`` (not ``"auto"``: the caller knows the model).
        streams: parallel streams (``"stream"``, ``"chunks"``); 1 is the literature's single-stream figure.
        window / stride: the sliding window, or the chunk length for ``"chunks"``.
        memory_length / num_layers: a Transformer with segment memory read as a stream.
    """
    if protocol == "stream":
        where = ("one stream" if streams == 1 else
                 f"{streams} parallel streams (the split cut into {streams} contiguous parts, each read from an "
                 "empty state)")
        if memory_length is not None:
            reach = f"up to {memory_length * num_layers} through {num_layers} layers; " if num_layers else ""
            return (f"{where}, segment memory carried from window to window: every layer of every prediction "
                    f"attends to the position itself and the {memory_length} before it ({reach}fewer only in "
                    f"the first {memory_length} tokens of a stream)")
        return (f"{where}, state carried from window to window: each prediction reads, through the state, every "
                "earlier token of its stream")
    if protocol == "sliding_window":
        if window is None or stride is None:
            raise UserError("describe_protocol('sliding_window') needs window and stride")
        if stride >= window:
            return (f"one stream in disjoint blocks of {window} tokens: a prediction reads 1 to {window} tokens "
                    f"(the current one and 0 to {window - 1} before it)")
        return (f"one stream, sliding window of {window} tokens advanced by {stride}: each target is scored once, "
                f"reading {window - stride + 1} to {window} tokens (the current one and {window - stride} to "
                f"{window - 1} before it; the first window's targets read fewer)")
    if protocol == "chunks":
        if window is None:
            raise UserError("describe_protocol('chunks') needs window (the chunk length)")
        return (f"{streams} parallel streams cut into disjoint {window}-token chunks, nothing carried from chunk "
                f"to chunk: a prediction reads 1 to {window} tokens (the current "
                f"one and 0 to {window - 1} before it)")
    raise UserError(f"protocol={protocol!r} is not one of {PROTOCOLS[1:]}")


def _summed_loss(model, input_ids, shift_labels, cache=None, use_cache=False):
    # num_items_in_batch=1 turns the model's loss into the plain sum over scored tokens.
    out = model(input_ids=input_ids, shift_labels=shift_labels, num_items_in_batch=1, cache=cache, use_cache=use_cache)
    return out.loss.double(), out


@torch.no_grad()
def stream_loss_sum(
    model,
    tokens: torch.Tensor,
    *,
    batch_size: int,
    bptt: int,
    device: torch.device | str = "cpu",
    num_processes: int = 1,
    process_index: int = 0,
    pad_token_id: int = 0,
    autocast=None,
    carry_state: bool = True,
) -> tuple[float, int]:
    """Summed loss and number of scored tokens of this process's streams of ``tokens`` (N,).

    ``carry_state=False`` reads every window on its own, from an empty state (the ``"chunks"`` protocol).
    """
    loader = StreamLoader(
        tokens,
        batch_size=batch_size,
        bptt=bptt,
        num_processes=num_processes,
        process_index=process_index,
        pad_to_full=True,
        pad_token_id=pad_token_id,
    )
    total, count, cache = torch.zeros((), dtype=torch.float64), 0, None
    for window in loader:
        n = window.num_tokens
        with autocast() if autocast else contextlib.nullcontext():
            loss, out = _summed_loss(
                model, window.input_ids.to(device), window.shift_labels.to(device), cache=cache, use_cache=carry_state
            )
        cache = out.cache if carry_state else None
        if n:
            total += loss.cpu()
            count += n
    return float(total), count


@torch.no_grad()
def sliding_window_loss_sum(
    model,
    tokens: torch.Tensor,
    *,
    window: int,
    stride: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    num_processes: int = 1,
    process_index: int = 0,
    pad_token_id: int = 0,
    autocast=None,
) -> tuple[float, int]:
    """Summed loss and scored-token count of this process's share of the sliding windows over ``tokens``."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    for inp, lab in sliding_window_batches(
        tokens, window=window, stride=stride, batch_size=batch_size, num_processes=num_processes,
        process_index=process_index, pad_token_id=pad_token_id,
    ):
        n = int((lab != -100).sum())
        with autocast() if autocast else contextlib.nullcontext():
            loss, _ = _summed_loss(model, inp.to(device), lab.to(device))
        total += loss.cpu()
        count += n
    return float(total), count


def evaluate_perplexity(
    model,
    tokens: torch.Tensor,
    *,
    accelerator=None,
    batch_size: int = 10,
    bptt: int = 70,
    window: int | None = None,
    stride: int | None = None,
    pad_token_id: int = 0,
    protocol: str = "auto",
) -> dict[str, Any]:
    """Perplexity of ``model`` on the token stream ``tokens`` (N,), summed across processes.

    Args:
        model: a (possibly accelerate-wrapped) causal LM; evaluation runs the unwrapped module in eval mode.
        tokens (`torch.LongTensor` of shape (N,)): the split.
        accelerator (`accelerate.Accelerator`, *optional*): shards the work and reduces the sums.
        batch_size: parallel streams (state-carrying models) or windows per forward (others), per process.
        bptt: window length for state-carrying models.
        window / stride: sliding window for other models; ``window`` defaults to
            ``config.max_position_embeddings``, ``stride`` to ``window // 2``. With ``protocol="chunks"``,
            ``window`` is the chunk length (default ``bptt``) and ``stride`` is not used.
        protocol: ``"auto"`` (stream for state-carrying models, sliding window otherwise), ``"stream"``,
            ``"sliding_window"`` or ``"chunks"`` (see the module docstring).

    Returns:
        ``{"loss": mean nats per token, "perplexity": exp(loss), "num_tokens": scored tokens}``.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"protocol={protocol!r} is not one of {PROTOCOLS}")
    if accelerator is not None:
        net = accelerator.unwrap_model(model)
        device, P, r = accelerator.device, accelerator.num_processes, accelerator.process_index
        autocast = accelerator.autocast
    else:
        net = model
        device, P, r, autocast = next(model.parameters()).device, 1, 0, None
    if protocol == "auto":
        protocol = "stream" if supports_state_carrying(net) else "sliding_window"
    if protocol == "stream" and not supports_state_carrying(net):
        raise UserError(
            f"protocol='stream' needs a model that carries state between windows; {type(net).__name__} does not "
            "(_is_stateful is False). Use protocol='sliding_window' or 'chunks'."
        )
    was_training = net.training
    net.eval()
    try:
        if protocol == "chunks":
            total, count = stream_loss_sum(
                net, tokens, batch_size=batch_size, bptt=window or bptt, device=device,
                num_processes=P, process_index=r, pad_token_id=pad_token_id, autocast=autocast, carry_state=False,
            )
        elif protocol == "stream":
            total, count = stream_loss_sum(
                net, tokens, batch_size=batch_size, bptt=bptt, device=device,
                num_processes=P, process_index=r, pad_token_id=pad_token_id, autocast=autocast,
            )
        else:
            window = window or int(net.config.max_position_embeddings)
            stride = stride or max(window // 2, 1)
            total, count = sliding_window_loss_sum(
                net, tokens, window=window, stride=stride, batch_size=batch_size, device=device,
                num_processes=P, process_index=r, pad_token_id=pad_token_id, autocast=autocast,
            )
    finally:
        net.train(was_training)
    sums = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    if accelerator is not None and P > 1:
        sums = accelerator.reduce(sums, reduction="sum")
    total, count = float(sums[0]), int(round(float(sums[1])))
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "num_tokens": count}
