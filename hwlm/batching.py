"""Batching: the token stream cut into what a model reads, for training and evaluation alike.

Below both `hwlm.training` and `hwlm.evaluation` (it imports neither). Two training regimes and one batch
interface: every batch has ``model_inputs(carried, device)`` (the keyword arguments of ``model(...)`` given the
state carried from the previous batch), ``carry(outputs)`` (the state for the next batch), ``num_tokens``
(scored targets) and ``index`` (its position in the epoch, where a resumed run starts again), so the training
loop never asks which regime it runs. Evaluation's sliding windows live here too.

*Streams* (recurrent models, truncated back-propagation through time)::

    corpus  t0 t1 t2 ... t(N-1)                       one long token stream
            |------ stream 0 ------|------ stream 1 ------| ... |-- stream S-1 --|
                                                          S = B * num_processes streams of L tokens

    rank r holds the contiguous streams r*B ... r*B+B-1 as a (B, L+1) tensor:

                 window 0        window 1        window 2
               <-- bptt -->    <-- bptt -->    <-- bptt -->
    stream 0   a0 a1 a2 a3  |  a4 a5 a6 a7  |  a8 ...
    stream 1   b0 b1 b2 b3  |  b4 b5 b6 b7  |  b8 ...
      ...

    window k: input_ids = rows[:, i:i+T], shift_labels = rows[:, i+1:i+1+T]   (B, T)

Stream s covers tokens ``s*L ... s*L+L`` (one token of overlap with the next stream, so every
token after the first is a target exactly once). Windows are read in order, so the recurrent state
returned for window k is the right initial state for window k+1 (carried, then detached). Every rank
has the same number of windows, so data-parallel processes step in lock-step, and no window is seen
twice in an epoch. The loader shards the corpus itself because accelerate's default sharding
(batch r, r+n, ... to rank r) would break the contiguity the carried state needs.

*Blocks* (Transformer): independent fixed-length blocks, shuffled per epoch with a generator seeded
by ``(seed, epoch)``; batch i of rank r is ``perm[(i*P + r)*B : (i*P + r + 1)*B]``.

Both loaders are deterministic functions of ``(seed, epoch, position)`` and can start at any
position, which is how a resumed run reproduces the uninterrupted one step for step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from hwlm.errors import UserError

__all__ = ["StreamLoader", "BlockLoader", "StreamWindow", "BlockBatch", "sliding_windows", "sliding_window_batches"]


@dataclass
class StreamWindow:
    """One TBPTT window: ``input_ids`` and ``shift_labels`` are (B, T); ``index`` counts windows in the epoch."""

    input_ids: torch.LongTensor
    shift_labels: torch.LongTensor
    index: int

    @property
    def num_tokens(self) -> int:
        """Number of scored targets (labels other than -100) in the window."""
        return int((self.shift_labels != -100).sum())

    def model_inputs(self, carried: Any, device: torch.device | str) -> dict[str, Any]:
        """``model(**...)`` arguments: the window, already shifted, and the state carried from the previous one."""
        return {"input_ids": self.input_ids.to(device), "shift_labels": self.shift_labels.to(device),
                "cache": carried, "use_cache": True}

    def carry(self, outputs) -> Any:
        """The state for the next window: the model's, detached (truncated back-propagation through time)."""
        return outputs.cache.detach()


@dataclass
class BlockBatch:
    """B independent blocks: ``input_ids`` and ``labels`` are (B, block_size); the model shifts the labels."""

    input_ids: torch.LongTensor
    labels: torch.LongTensor
    index: int

    @property
    def num_tokens(self) -> int:
        """Number of scored targets: every label but each block's first (nothing predicts it) and -100s."""
        return int((self.labels[:, 1:] != -100).sum())

    def model_inputs(self, carried: Any, device: torch.device | str) -> dict[str, Any]:
        """``model(**...)`` arguments; blocks are independent, so ``carried`` (always None) is not passed."""
        return {"input_ids": self.input_ids.to(device), "labels": self.labels.to(device)}

    def carry(self, outputs) -> None:
        """Nothing is carried from one block batch to the next."""
        return None


class StreamLoader:
    """B parallel token streams per process, read in windows of ``bptt`` tokens in order.

    Args:
        tokens (`torch.LongTensor` of shape (N,)): the whole split as one token stream.
        batch_size (`int`): streams per process (B).
        bptt (`int`): window length T.
        num_processes (`int`, defaults to 1) / process_index (`int`, defaults to 0): sharding.
            Each process gets B contiguous streams of its own.
        variable_length (`bool`, defaults to False): AWD-LSTM style window lengths (Merity et al. 2018):
            with probability 0.95 the base length is ``bptt``, else ``bptt/2``; the window length is drawn
            from a normal distribution around it (std 5), at least 5 and at most ``bptt + 20``. The lengths
            come from a generator seeded with ``(seed, epoch)`` so all processes agree.
        seed (`int`, defaults to 0): seeds the variable window lengths.
        pad_to_full (`bool`, defaults to False): for evaluation: instead of dropping the tail that does not
            fill S equal streams, pad the last streams (input with ``pad_token_id``, labels with -100) so that
            every target of the split is scored exactly once.
        pad_token_id (`int`, defaults to 0): filler id for ``pad_to_full``.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        *,
        batch_size: int,
        bptt: int,
        num_processes: int = 1,
        process_index: int = 0,
        variable_length: bool = False,
        seed: int = 0,
        pad_to_full: bool = False,
        pad_token_id: int = 0,
    ):
        if tokens.dim() != 1:
            raise UserError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
        if batch_size < 1 or bptt < 1:
            raise UserError(f"batch_size and bptt must be >= 1, got batch_size={batch_size}, bptt={bptt}")
        if not 0 <= process_index < num_processes:
            raise UserError(f"process_index={process_index} is outside 0..{num_processes - 1}")
        self.batch_size = batch_size
        self.bptt = bptt
        self.num_processes = num_processes
        self.process_index = process_index
        self.variable_length = variable_length
        self.seed = seed
        num_streams = batch_size * num_processes
        num_targets = tokens.numel() - 1
        if pad_to_full:
            stream_len = math.ceil(num_targets / num_streams)
        else:
            stream_len = num_targets // num_streams
        if stream_len < 1:
            raise UserError(
                f"the split has {tokens.numel()} tokens, too few for {num_streams} streams "
                f"(per_device batch size {batch_size} x {num_processes} processes); lower the batch size"
            )
        self.stream_len = stream_len
        first = process_index * batch_size
        if not pad_to_full and tokens.is_contiguous() and tokens.dtype == torch.long:
            # This process's B streams as strided views of the split (labels: the same memory, one token on), so a
            # stream memory-mapped from a prepared folder is never copied: only each window is, when it is read.
            offset = tokens.storage_offset() + first * stream_len
            self.inputs = tokens.as_strided((batch_size, stream_len), (stream_len, 1), offset)  # (B, L)
            self.labels = tokens.as_strided((batch_size, stream_len), (stream_len, 1), offset + 1)  # (B, L)
        else:
            self.inputs, self.labels = self._padded_rows(tokens, first, batch_size, stream_len, pad_token_id)
        self._epoch = 0

    @staticmethod
    def _padded_rows(tokens, first: int, batch_size: int, stream_len: int, pad_token_id: int):
        """Streams copied into (B, L) rows, the last ones padded (inputs with ``pad_token_id``, labels with -100)."""
        rows_inp, rows_lab = [], []
        for s in range(first, first + batch_size):
            start = s * stream_len
            seg = tokens[start : start + stream_len + 1]  # (<= L+1,)
            inp = torch.full((stream_len,), pad_token_id, dtype=torch.long)
            lab = torch.full((stream_len,), -100, dtype=torch.long)
            inp[: seg[:stream_len].numel()] = seg[:stream_len]
            lab[: max(seg.numel() - 1, 0)] = seg[1:]
            rows_inp.append(inp)
            rows_lab.append(lab)
        return torch.stack(rows_inp), torch.stack(rows_lab)  # (B, L) each

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; it seeds the variable window lengths."""
        self._epoch = epoch

    def window_lengths(self) -> list[int]:
        """Lengths of this epoch's windows, in order (identical on every process)."""
        if not self.variable_length:
            n = math.ceil(self.stream_len / self.bptt)
            return [min(self.bptt, self.stream_len - k * self.bptt) for k in range(n)]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        lengths, pos = [], 0
        while pos < self.stream_len:
            base = self.bptt if torch.rand((), generator=gen) < 0.95 else self.bptt / 2
            length = int(round(float(torch.normal(float(base), 5.0, (), generator=gen))))
            length = max(5, min(length, self.bptt + 20, self.stream_len - pos))
            lengths.append(length)
            pos += length
        return lengths

    def __len__(self) -> int:
        return len(self.window_lengths())

    def iter_windows(self, start: int = 0) -> Iterator[StreamWindow]:
        """Yield windows ``start, start+1, ...`` of the current epoch."""
        pos = 0
        for k, length in enumerate(self.window_lengths()):
            if k >= start:
                yield StreamWindow(
                    input_ids=self.inputs[:, pos : pos + length].contiguous(),  # (B, T)
                    shift_labels=self.labels[:, pos : pos + length].contiguous(),  # (B, T); contiguous: the loss .view()s it
                    index=k,
                )
            pos += length

    def iter_from(self, start: int = 0) -> Iterator[StreamWindow]:
        """The batch interface shared with `BlockLoader`: windows ``start, start+1, ...`` of the epoch."""
        return self.iter_windows(start)

    def __iter__(self) -> Iterator[StreamWindow]:
        return self.iter_windows(0)


class BlockLoader:
    """Shuffled batches of fixed-length blocks for models trained on independent blocks.

    Args:
        input_ids (`torch.LongTensor` of shape (num_blocks, block_size)).
        labels (`torch.LongTensor` of shape (num_blocks, block_size), *optional*): passed as ``labels``
            (the model shifts them); defaults to ``input_ids``.
        batch_size (`int`): blocks per batch per process.
        num_processes / process_index: sharding; every process gets the same number of batches
            (the incomplete last round is dropped).
        shuffle (`bool`, defaults to True) / seed (`int`): the order is ``randperm`` seeded by ``(seed, epoch)``.

    Why not a ``DataLoader`` with a seeded sampler, prepared by accelerate, and ``skip_first_batches`` on resume:
    that layout is the same (batch ``i*P + r`` to rank ``r``), but accelerate's ``SeedableRandomSampler`` seeds
    with ``seed + epoch``, so every existing run's block order would change and a mid-epoch checkpoint written
    before would resume onto other blocks. Here resuming at batch ``start`` is an index, not a replay.
    """

    def __init__(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        batch_size: int,
        num_processes: int = 1,
        process_index: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ):
        if input_ids.dim() != 2:
            raise UserError(f"input_ids must be (num_blocks, block_size), got shape {tuple(input_ids.shape)}")
        self.input_ids = input_ids
        self.labels = input_ids if labels is None else labels
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0
        if len(self) == 0:
            raise UserError(
                f"{input_ids.shape[0]} blocks are too few for one batch of {batch_size} blocks "
                f"on each of {num_processes} processes; lower the batch size or the block size"
            )

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __len__(self) -> int:
        return self.input_ids.shape[0] // (self.batch_size * self.num_processes)

    def _order(self) -> torch.Tensor:
        n = self.input_ids.shape[0]
        if not self.shuffle:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._epoch)
        return torch.randperm(n, generator=gen)

    def iter_batches(self, start: int = 0) -> Iterator[BlockBatch]:
        """Yield batches ``start, start+1, ...`` of this process (``input_ids``/``labels`` (B, block_size))."""
        order = self._order()
        B, P, r = self.batch_size, self.num_processes, self.process_index
        for i in range(start, len(self)):
            idx = order[(i * P + r) * B : (i * P + r + 1) * B]
            yield BlockBatch(input_ids=self.input_ids[idx], labels=self.labels[idx], index=i)

    def iter_from(self, start: int = 0) -> Iterator[BlockBatch]:
        """The batch interface shared with `StreamLoader`: batches ``start, start+1, ...`` of the epoch."""
        return self.iter_batches(start)

    def __iter__(self) -> Iterator[BlockBatch]:
        return self.iter_batches(0)


def sliding_windows(num_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(begin, first_scored)`` pairs: the window covers inputs ``begin:begin+window``; targets from
    position ``first_scored`` of the window on are scored (earlier ones are context already scored)."""
    if not 0 < stride <= window:
        raise UserError(f"eval stride must be in 1..window ({window}), got {stride}")
    out, scored_until = [], 0  # targets 1..scored_until are done
    begin = 0
    while scored_until < num_tokens - 1:
        end = min(begin + window, num_tokens - 1)  # last target index covered
        out.append((begin, scored_until - begin))
        scored_until = end
        begin += stride
    return out


def sliding_window_batches(
    tokens: torch.Tensor,
    *,
    window: int,
    stride: int,
    batch_size: int,
    num_processes: int = 1,
    process_index: int = 0,
    pad_token_id: int = 0,
) -> Iterator[tuple[torch.LongTensor, torch.LongTensor]]:
    """This process's contiguous share of the sliding windows over ``tokens`` (N,), in text order.

    Yields ``(input_ids, shift_labels)``, both (B, window): the targets a window scores for the first time
    are in ``shift_labels``; its context (already scored by an earlier window) and the padding are -100.
    """
    windows = sliding_windows(tokens.numel(), window, stride)
    per_rank = math.ceil(len(windows) / num_processes)
    mine = windows[process_index * per_rank : (process_index + 1) * per_rank]
    for i in range(0, len(mine), batch_size):
        chunk = mine[i : i + batch_size]
        inp = torch.full((len(chunk), window), pad_token_id, dtype=torch.long)  # (B, W)
        lab = torch.full((len(chunk), window), -100, dtype=torch.long)  # (B, W)
        for row, (begin, first) in enumerate(chunk):
            x = tokens[begin : begin + window]
            y = tokens[begin + 1 : begin + window + 1]
            inp[row, : x.numel()] = x
            lab[row, max(first, 0) : y.numel()] = y[max(first, 0) :]
        yield inp, lab
