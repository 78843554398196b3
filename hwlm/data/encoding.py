"""Text to token ids through Arrow: `ArrowLineEncoder` (one whitespace split per batch, each distinct chunk through
the tokenizer once), `CountingEncoder` (count the train split and encode it from the same pass) and the helpers
that flatten ids into a stream and cut it into blocks."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets.table import InMemoryTable
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase


from hwlm.tokenization import (
    ARROW_ONLY_WHITESPACE,
    SPECIAL_TOKENS,
    split_by_special_tokens,
    build_word_tokenizer,
    is_whitespace_only,
    has_unusual_whitespace,
    split_odd_whitespace,
    split_whitespace,
    tokenizer_from_counts,
    words_from_chunk_counts,
)


class ArrowLineEncoder:
    """Encode lines to token ids + ``<eos>`` with Arrow compute and numpy, ids identical to the tokenizer's.

    The bulk of a corpus is words already in the vocabulary; those are looked up in one vectorized
    ``pyarrow.compute.index_in`` over the whitespace-split chunks. Everything else (unknown words, chunks the
    pipeline splits or normalizes, lines with the four control characters Arrow treats as whitespace and Rust
    does not) goes through the ``tokenizers`` tokenizer itself, once per distinct chunk. A vocabulary word is
    looked up directly only if the tokenizer maps it to exactly its own id (checked once, at construction), so
    the result equals ``backend_tokenizer.encode_batch`` on every line (a test compares both on every test corpus).

    Used as a batched ``Dataset.map`` function over Arrow tables (picklable, so ``num_proc`` works).

    Args:
        tokenizer: a transformers tokenizer (``backend_tokenizer``, ``eos_token_id``) or a `tokenizers.Tokenizer`
            with ``eos_id``.
    """

    #: Part of the datasets cache key of every encoded split: change it when the ids of some line change.
    FORMAT = "hwlm-streams-v2"

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.backend = tokenizer.backend_tokenizer
        self.eos_id = tokenizer.eos_token_id
        vocab = self.backend.get_vocab(with_added_tokens=True)
        words = pa.array(list(vocab), pa.large_string())  # (V,)
        ids = np.fromiter(vocab.values(), dtype=np.int32, count=len(vocab))  # (V,)
        if is_whitespace_only(self.backend):  # a word maps to itself unless a special token hides inside it
            direct = pc.invert(split_by_special_tokens(words)).to_numpy(zero_copy_only=False)
        else:
            encoded = self.backend.encode_batch_fast(words.to_pylist(), add_special_tokens=False)
            direct = np.array([e.ids == [i] for e, i in zip(encoded, ids.tolist())], dtype=bool)
        self.direct_words = words.filter(pa.array(direct))
        self.direct_ids = ids[direct]

    def __reduce__(self):
        """Pickle as what decides the ids: the tokenizer's JSON, the ``<eos>`` id and `FORMAT`.

        ``num_proc`` workers rebuild the encoder from it, and ``Dataset.map`` hashes it into the cache key of the
        encoded split, so the key is (the input split, the tokenizer's content, this format) whatever the object's
        other state."""
        return _encoder_from_json, (self.backend.to_str(), self.eos_id, self.FORMAT)

    def encode(self, lines: pa.Array) -> pa.Array:
        """Encode lines.

        Args:
            lines (`pyarrow.Array` of strings): one corpus line per element (nulls count as empty lines).
        Returns:
            `pyarrow.ListArray` of int32: per line its ids followed by ``<eos>`` (an empty line: just ``<eos>``).
        """
        lines = pc.fill_null(lines, "")
        odd_texts = []
        if not has_unusual_whitespace(lines):
            parts = split_whitespace(lines, ascii_only=True)
        else:
            odd = pc.match_substring_regex(lines, ARROW_ONLY_WHITESPACE).to_numpy(zero_copy_only=False)
            odd_texts = pc.filter(lines, pa.array(odd)).to_pylist() if odd.any() else []
            if odd_texts:  # encoded below with the tokenizer; here they count as empty lines
                lines = pc.if_else(pa.array(odd), "", lines)
            parts = split_whitespace(lines)
        chunk_ids, chunk_len, pool = self._encode_chunks(parts.flatten())
        values, offsets = _append_eos(chunk_ids, chunk_len, pool, parts.offsets.to_numpy(), self.eos_id)
        if odd_texts:
            rows = np.split(values, offsets[1:-1])
            for row, encoding in zip(np.flatnonzero(odd), self.backend.encode_batch_fast(odd_texts, add_special_tokens=False)):
                rows[row] = np.array(encoding.ids + [self.eos_id], dtype=np.int32)
            values = np.concatenate(rows)
            offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))

    def _encode_chunks(self, chunks: pa.Array) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Per chunk: its id if it is a direct vocabulary word, else its ids (0..n) from the tokenizer."""
        index = pc.index_in(chunks, value_set=self.direct_words)
        found = pc.is_valid(index).to_numpy(zero_copy_only=False)
        chunk_ids = self.direct_ids[pc.fill_null(index, 0).to_numpy(zero_copy_only=False)]  # (num_chunks,)
        chunk_len = found.astype(np.int64)
        misses = np.flatnonzero(~found)
        pool = (misses, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64))
        if len(misses):
            missed = pc.take(chunks, pa.array(misses))
            distinct = pc.unique(missed)
            encoded = self.backend.encode_batch_fast(distinct.to_pylist(), add_special_tokens=False)
            lengths = np.array([len(e.ids) for e in encoded], dtype=np.int64)  # "" -> 0
            flat = np.fromiter((i for e in encoded for i in e.ids), dtype=np.int32, count=int(lengths.sum()))
            which = pc.index_in(missed, value_set=distinct).to_numpy(zero_copy_only=False)
            chunk_len[misses] = lengths[which]
            pool = (misses, which, flat, np.concatenate([[0], np.cumsum(lengths)]))
        return chunk_ids, chunk_len, pool

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table({"input_ids": self.encode(batch.column("text").combine_chunks())})


class CountingEncoder:
    """Count a split's words and keep what it takes to encode it, from one whitespace split of the text.

    `count_words` + `ArrowLineEncoder` split every line twice (once to count, once to encode) and look every
    token up in the vocabulary. Here each Arrow batch is split once; its chunks are dictionary-encoded
    (``pyarrow.compute.dictionary_encode``) and their batch-local codes mapped to ids of one corpus-wide table
    of distinct chunks, counted with ``numpy.bincount``. Once the tokenizer is built from the counts, only the
    distinct chunks go through `ArrowLineEncoder` (exact ids, as the tokenizer gives them), and every batch is
    encoded by a numpy take of its stored chunk ids. Memory: 4 bytes per token plus the line offsets.

    Batches holding `ARROW_ONLY_WHITESPACE` lines are kept as text and encoded by `ArrowLineEncoder` at the end.

    Args:
        settings (`dict`): `train_word_tokenizer` keyword arguments (``vocab_size``, ``min_frequency``,
            ``lowercase``, ``nfkc``, ``pre_tokenizer``).
    """

    def __init__(self, settings: dict):
        self.settings = dict(settings)
        pipeline = {k: self.settings[k] for k in ("lowercase", "nfkc", "pre_tokenizer") if k in self.settings}
        self.pipeline = build_word_tokenizer(**pipeline)
        self.chunks = pa.array([], pa.large_string())  # (D,) distinct chunks seen so far, in first-seen order
        self.counts = np.zeros(0, dtype=np.int64)  # (D,)
        self.batches: list = []  # per batch: (chunk ids (C,), line offsets (L+1,)) or the batch's lines as text
        self.odd_lines: list[str] = []

    def add(self, lines: pa.Array) -> None:
        """Count one batch of lines (a string array; nulls are empty lines) and keep its chunk ids."""
        lines = pc.fill_null(lines, "")
        parts, odd = split_odd_whitespace(lines)
        if odd:
            self.odd_lines += odd
            self.batches.append(lines)
        coded = pc.dictionary_encode(parts.flatten())
        local = coded.dictionary.cast(pa.large_string())  # (d,) this batch's distinct chunks
        found = pc.index_in(local, value_set=self.chunks).to_numpy(zero_copy_only=False)  # float, NaN = new
        new = np.isnan(found)
        to_global = np.empty(len(local), dtype=np.int64)
        to_global[~new] = found[~new]
        to_global[new] = len(self.chunks) + np.arange(int(new.sum()))
        if new.any():
            self.chunks = pa.concat_arrays([self.chunks, local.filter(pa.array(new))])
        ids = to_global[coded.indices.to_numpy(zero_copy_only=False)].astype(np.int32)  # (C,)
        counts = np.bincount(ids, minlength=len(self.chunks))
        counts[: len(self.counts)] += self.counts
        self.counts = counts
        if not odd:
            self.batches.append((ids, parts.offsets.to_numpy()))

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer `train_word_tokenizer` would build from the lines added (a test compares them)."""
        chunks = pa.table({"word": self.chunks, "n": pa.array(self.counts, pa.int64())})
        words, counts = words_from_chunk_counts(chunks, self.odd_lines, self.pipeline)
        return tokenizer_from_counts(words, counts, **self.settings)

    def encode(self, tokenizer: PreTrainedTokenizerBase) -> pa.ChunkedArray:
        """Every line added, as ``input_ids`` lists ending in ``<eos>`` (equal to `ArrowLineEncoder`'s).

        Consumes the stored chunk ids (each batch's are dropped once it is encoded, so memory holds the ids of one
        layout at a time): call it once."""
        encoder = ArrowLineEncoder(tokenizer)
        # the distinct chunks, each laid out as a one-chunk "line": ids + <eos>, so the offsets give each one's span
        chunk_ids, chunk_len, pool = encoder._encode_chunks(self.chunks)
        flat, spans = _append_eos(chunk_ids, chunk_len, pool, np.arange(len(self.chunks) + 1), encoder.eos_id)
        starts, lengths = spans[:-1], np.diff(spans) - 1  # (D,): where each chunk's ids start, how many
        single = lengths.max(initial=0) <= 1
        out, batches, self.batches = [], self.batches, []
        for i, batch in enumerate(batches):
            batches[i] = None  # freed as soon as this batch is encoded
            if isinstance(batch, pa.Array):
                out.append(encoder.encode(batch))
                continue
            ids, line_offsets = batch
            n = lengths[ids]  # (C,) ids per chunk occurrence ("" -> 0)
            if single:
                tokens = flat[starts[ids[n == 1]]]
            else:  # a chunk the pipeline splits: gather its ids
                inner = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
                tokens = flat[np.repeat(starts[ids], n) + inner]
            line_starts = np.concatenate([[0], np.cumsum(n)])[line_offsets]  # (L+1,)
            values = np.insert(tokens, line_starts[1:], encoder.eos_id).astype(np.int32, copy=False)
            offsets = line_starts + np.arange(len(line_starts))
            out.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32())))
        return pa.chunked_array(out, pa.list_(pa.int32()))


def _encoder_from_json(tokenizer_json: str, eos_id: int, format: str) -> ArrowLineEncoder:
    """Rebuild a pickled `ArrowLineEncoder` (`ArrowLineEncoder.__reduce__`)."""
    if format != ArrowLineEncoder.FORMAT:
        raise ValueError(f"an ArrowLineEncoder pickled with format {format!r}; this hwlm encodes {ArrowLineEncoder.FORMAT!r}")
    return ArrowLineEncoder(SimpleNamespace(backend_tokenizer=Tokenizer.from_str(tokenizer_json), eos_token_id=eos_id))


def content_digest(column: pa.ChunkedArray) -> str:
    """SHA-256 (16 hex digits) of a column of id lists: every row's ids and where each row ends."""
    digest = hashlib.sha256()
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()
        digest.update(np.ascontiguousarray(offsets - offsets[0], dtype=np.int64))
        digest.update(np.ascontiguousarray(chunk.flatten().to_numpy(zero_copy_only=False), dtype=np.int32))
    return digest.hexdigest()[:16]


def count_and_encode(train: Dataset, settings: dict) -> tuple[PreTrainedTokenizerBase, pa.ChunkedArray]:
    """Train the tokenizer on a split and encode that split, from one pass over its text (`CountingEncoder`).

    Args:
        train (`Dataset`): with a ``text`` column.
        settings (`dict`): keyword arguments of `train_word_tokenizer`.
    Returns:
        ``(tokenizer, input_ids)``: the tokenizer `train_on_split` gives, and the split's ids per line, equal
        to what `prepare_datasets` computes with it.
    """
    counter = CountingEncoder(settings)
    for batch in train.with_format("arrow").iter(batch_size=100_000):
        column = batch.column("text")
        counter.add(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    tokenizer = counter.tokenizer()
    return tokenizer, counter.encode(tokenizer)


def _append_eos(chunk_ids, chunk_len, pool, line_offsets, eos_id) -> tuple[np.ndarray, np.ndarray]:
    """Lay out the chunks' ids line by line with one ``<eos>`` after each line.

    Args:
        chunk_ids (`np.ndarray` (C,)): the id of each chunk found directly in the vocabulary.
        chunk_len (`np.ndarray` (C,)): ids per chunk (1 for direct chunks, 0..n for the others).
        pool (`tuple`): ``(miss positions, distinct index per miss, flat ids of the distinct misses, their offsets)``.
        line_offsets (`np.ndarray` (L+1,)): chunk offsets of the lines.
    Returns:
        ``(values, offsets)``: int32 ids (N + L,) and int64 line offsets (L+1,).
    """
    misses, which, flat, flat_offsets = pool
    if len(misses) and chunk_len[misses].max() > 1:  # a chunk the pipeline splits: scatter its ids
        starts = np.concatenate([[0], np.cumsum(chunk_len)])  # (C+1,) where each chunk's ids start
        tokens = np.empty(int(starts[-1]), dtype=np.int32)
        direct = chunk_len == 1
        direct[misses] = False
        tokens[starts[:-1][direct]] = chunk_ids[direct]
        lengths = chunk_len[misses]
        inner = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        tokens[np.repeat(starts[misses], lengths) + inner] = flat[np.repeat(flat_offsets[which], lengths) + inner]
    else:  # every chunk is at most one id (the usual case): a mask does it
        single = chunk_len[misses] == 1
        chunk_ids[misses[single]] = flat[flat_offsets[which[single]]]
        tokens = chunk_ids[chunk_len == 1]
    line_starts = np.concatenate([[0], np.cumsum(chunk_len)])[line_offsets]  # (L+1,) token offsets of the lines
    values = np.insert(tokens, line_starts[1:], eos_id).astype(np.int32, copy=False)  # one <eos> after each line
    return values, line_starts + np.arange(len(line_starts))


def flat_ids(ds: Dataset) -> np.ndarray:
    """All ``input_ids`` of a split as one 1-D int array, via Arrow (no Python loop over tokens).

    The rows are read as the dataset presents them (a ``select`` or ``shuffle`` applied): zero-copy for a plain or
    memory-mapped table, one gather otherwise."""
    column = ds.with_format("arrow")[:].column("input_ids")
    if column.num_chunks == 0:
        return np.zeros(0, dtype=np.int32)
    return pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy(zero_copy_only=False)


def blocks_of(flat: np.ndarray, block_size: int, fingerprint: str) -> Dataset:
    """``flat`` (N,) as rows of ``block_size`` tokens, without copying the ids.

    The fingerprint is given (derived from the stream's) because a `Dataset` built without one hashes its whole
    table to make one: for a WikiText-103-sized split that serialisation alone took 2.4 GB of extra peak memory.
    """
    n_blocks = len(flat) // block_size
    values = pa.array(flat[: n_blocks * block_size].astype(np.int32, copy=False))  # zero-copy view
    rows = pa.FixedSizeListArray.from_arrays(values, block_size)  # (n_blocks, block_size)
    return Dataset(InMemoryTable(pa.table({"input_ids": rows, "labels": rows})), fingerprint=fingerprint)


