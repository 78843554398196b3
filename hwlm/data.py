"""Corpora in, token streams and blocks out: loading, tokenisation and the prepared-data folder.

The line convention of the language-modelling literature (pytorch/examples ``word_language_model``)::

    "the cat sat"  ->  the cat sat <eos>
    ""             ->  <eos>

Each corpus line gives one row of ``streams`` whose ``input_ids`` end in ``<eos>``; a split read
row after row is the split's token stream. ``blocks`` cuts that stream into rows of exactly
``block_size`` tokens with ``labels`` (a copy: hwlm models shift labels inside, as transformers
models do)::

    stream   t0 t1 t2 ... t(B-1) | tB ... t(2B-1) | ... | remainder (< B tokens, dropped)
    blocks   row 0                 row 1

Unlike run_clm's ``group_texts``, blocks are cut from the whole split, not per ``map`` batch, so no
tokens are lost at batch boundaries.

A prepared folder (``prepare_datasets(..., output_dir=...)``, ``hwlm-prepare``)::

    output_dir/streams/         DatasetDict.save_to_disk: input_ids per line (int32)
    output_dir/blocks/          DatasetDict.save_to_disk: input_ids, labels (block_size each)
    output_dir/tokenizer/       the tokenizer used (AutoTokenizer.from_pretrained)
    output_dir/tokens/          <split>.npy: each split's token stream, int64, memory-mapped by stream_tensor
    output_dir/hwlm_data.json   tokenizer fingerprint, vocab size, block size, counts, source (with the
                                content fingerprints of local input files)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, List, Value, load_dataset, load_from_disk
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from . import corpora
from .settings import DataArguments  # re-exported: defined where --help can read it cheaply

if TYPE_CHECKING:  # torch is imported where a tensor is made (PreparedData.stream_tensor)
    import torch
from .tokenization import (
    _SPECIAL_PATTERN,
    ARROW_ONLY_WHITESPACE,
    SPECIAL_TOKENS,
    build_word_tokenizer,
    is_whitespace_only,
    split_odd_whitespace,
    split_whitespace,
    tokenizer_from_counts,
    words_from_chunk_counts,
    PRETOKENIZED_SETTINGS,
    TokenizerArguments,
    load_tokenizer,
    tokenizer_fingerprint,
    train_word_tokenizer,
    unk_token_id,
)

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
#: The committed default tokenizer, built from the embedded corpus by ``hwlm-tokenizer``.
REPO_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "tokenizer"
#: Tokenizer settings for the embedded corpus (raw English prose and code from Python's manual):
#: punctuation split off words, case and Unicode compatibility forms folded, words seen once
#: dropped (mostly identifiers and numbers), at most 10,000 entries.
EMBEDDED_TOKENIZER_SETTINGS = {"vocab_size": 10000, "min_frequency": 2, "lowercase": True, "nfkc": True,
                               "pre_tokenizer": "words"}
#: Tokenizer settings for raw text (the ``wikitext-*-raw`` corpora): WikiText's own conventions, from raw text
#: (the ``treebank`` pre-tokenizer) and its vocabulary rule (words seen fewer than 3 times become <unk>).
RAW_TEXT_SETTINGS = {"vocab_size": None, "min_frequency": 3, "lowercase": False, "nfkc": False,
                     "pre_tokenizer": "treebank"}
#: Percent of reference-manual topics per split, assigned by the SHA-256 of the topic key.
EMBEDDED_SPLIT_PERCENT = {"train": 80, "validation": 10, "test": 10}
PREPARED_FORMAT_VERSION = 2  # 2: tokens/<split>.npy (memory-mapped streams); 1 is still read
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


# --------------------------------------------------------------------------------------------
# The embedded corpus
# --------------------------------------------------------------------------------------------


def _split_lines(text: str) -> list[str]:
    """Split like the datasets text loader: universal newlines, no trailing empty line."""
    return [line.rstrip("\n") for line in io.StringIO(text, newline=None).readlines()]


def _embedded_topics() -> dict[str, str]:
    import pydoc_data.topics

    return pydoc_data.topics.topics


def embedded_split_of(key: str) -> str:
    """The split of one reference-manual topic: SHA-256 of its key, modulo 100, against 80/10/10.

    Args:
        key (`str`): a key of ``pydoc_data.topics.topics``.
    Returns:
        ``"train"``, ``"validation"`` or ``"test"``; the same on every machine and Python version.
    """
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100
    edge = 0
    for split in SPLITS:
        edge += EMBEDDED_SPLIT_PERCENT[split]
        if bucket < edge:
            return split
    raise AssertionError("split percentages must sum to 100")


def embedded_corpus_lines() -> dict[str, list[str]]:
    """The embedded corpus as lines per split (topics in sorted key order).

    Returns:
        `dict[str, list[str]]` with keys ``train``, ``validation``, ``test``.
    """
    topics = _embedded_topics()
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key in sorted(topics):
        out[embedded_split_of(key)].extend(_split_lines(topics[key]))
    return out


def embedded_corpus_info() -> dict:
    """Where the embedded corpus comes from: module, Python version, content hash, topics per split.

    Returns:
        `dict` with keys ``source``, ``python_version``, ``sha256``, ``topics``, ``lines``.
    """
    topics = _embedded_topics()
    blob = json.dumps(topics, sort_keys=True, ensure_ascii=False).encode("utf-8")
    lines = embedded_corpus_lines()
    return {
        "source": "pydoc_data.topics (Python reference manual topics, shipped with CPython)",
        "python_version": platform.python_version(),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "topics": {s: sum(embedded_split_of(k) == s for k in topics) for s in SPLITS},
        "lines": {s: len(v) for s, v in lines.items()},
    }


def _embedded_rows(split: str, corpus_sha256: str):
    # corpus_sha256 is unused here but part of gen_kwargs, so the datasets cache key changes
    # whenever the text shipped with Python does.
    for line in embedded_corpus_lines()[split]:
        yield {"text": line}


def load_embedded_corpus() -> DatasetDict:
    """The embedded corpus as a DatasetDict (written to the datasets cache, so later maps are cached).

    Returns:
        `DatasetDict` with splits ``train``, ``validation``, ``test`` and a ``text`` column, one row per line.
    """
    sha = embedded_corpus_info()["sha256"]
    features = Features({"text": Value("string")})
    return DatasetDict({
        s: Dataset.from_generator(_embedded_rows, features=features, gen_kwargs={"split": s, "corpus_sha256": sha})
        for s in SPLITS
    })


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def check_utf8(path: Union[str, Path], chunk_bytes: int = 1 << 23) -> None:
    """Check that a file is valid UTF-8, streaming it in chunks cut at line ends.

    Args:
        path: the file.
        chunk_bytes (`int`): bytes read per step (plus the rest of the line).
    Raises:
        ValueError: naming the file, the 1-based line and the bad byte, with the fixes.
    """
    line_base = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                return
            chunk += f.readline()  # b"\n" never occurs inside a multi-byte UTF-8 sequence
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                line = line_base + chunk.count(b"\n", 0, e.start) + 1
                column = e.start - (chunk.rfind(b"\n", 0, e.start) + 1) + 1
                raise ValueError(
                    f"{path}: line {line}, byte {column} is not valid UTF-8 (0x{chunk[e.start]:02x}: {e.reason}). "
                    "Re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or pass "
                    "--replace_invalid_utf8 to replace such bytes with U+FFFD."
                ) from None
            line_base += chunk.count(b"\n")


def _local_files(args: DataArguments) -> dict:
    return {s: f for s, f in zip(SPLITS, (args.train_file, args.validation_file, args.test_file)) if f}


def describe_source(args: DataArguments) -> dict:
    """A JSON-able record of where the corpus comes from (stored in ``hwlm_data.json``).

    Local files (given, or a named corpus's copies or downloads) are recorded with their content fingerprint
    (`hwlm.corpora.file_fingerprint`): size and a fast hash, so a file replaced by another is told apart even
    when its modification time is the same.

    Args:
        args (`DataArguments`).
    Returns:
        `dict` with ``kind`` (``"embedded"``, ``"named"``, ``"hub"`` or ``"files"``) and its details.
    """
    files = _local_files(args)
    named = corpora.named_corpus(args.dataset_name)
    if files:
        return {"kind": "files", "files": {s: str(Path(f).resolve()) for s, f in files.items()},
                "fingerprints": {s: corpora.file_fingerprint(f) for s, f in files.items()},
                "text_column": args.text_column}
    if named:
        paths, _ = corpora.resolve(named)
        return {"kind": "named", "dataset_name": named.name, "description": named.description,
                "origin": "local copy" if corpora.local_copy(named) else "download", "urls": named.urls(),
                "source": named.source, "files": paths,
                "fingerprints": {s: [corpora.file_fingerprint(p) for p in ps] for s, ps in paths.items()}}
    if args.dataset_name:
        return {"kind": "hub", "dataset_name": args.dataset_name, "dataset_config_name": args.dataset_config_name,
                "text_column": args.text_column}
    return {"kind": "embedded", **embedded_corpus_info()}


def content_config_name(files: dict) -> str:
    """A `datasets` config name made from the files' content (`hwlm.corpora.file_fingerprint`).

    datasets keys its cache of local files by path and modification time, so a file replaced by other text with
    the same time would be served from the cache; naming the config after the content makes that a cache miss.

    Args:
        files (`dict[str, str | list[str]]`): split -> file(s).
    Returns:
        `str`, ``"content-<16 hex digits>"``.
    """
    prints = {s: [corpora.file_fingerprint(p) for p in ([f] if isinstance(f, (str, Path)) else f)]
              for s, f in sorted(files.items())}
    return "content-" + hashlib.sha256(json.dumps(prints, sort_keys=True).encode()).hexdigest()[:16]


def _load_files(files: dict, args: DataArguments, builder: Optional[str] = None) -> DatasetDict:
    """Load local files (split -> path or list of paths) with the datasets builder their extension names."""
    builders = {builder} if builder else set()
    for split, name in ((s, n) for s, names in files.items() for n in ([names] if isinstance(names, str) else names)):
        path = Path(name)
        flag = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}[split]
        if builder:
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{flag} {name!r} does not exist (or is not a file); check the path.")
        if path.stat().st_size == 0:
            raise ValueError(f"{flag} {name!r} is empty (0 bytes); an empty corpus cannot be used.")
        builders.add(_BUILDERS.get(path.suffix.lower(), "text"))  # .txt, .tokens, ... -> one row per line
    if len(builders) > 1:
        raise ValueError(
            f"the data files mix formats ({sorted(builders)}: {files}); give all splits in one format."
        )
    builder = builders.pop()
    kwargs: dict[str, Any] = {}
    if builder in ("text", "json", "csv"):
        if not args.replace_invalid_utf8:
            for names in files.values():
                for name in [names] if isinstance(names, str) else names:
                    check_utf8(name)
        kwargs["encoding_errors"] = "replace" if args.replace_invalid_utf8 else "strict"
    data_files = {s: str(f) if isinstance(f, (str, Path)) else [str(p) for p in f] for s, f in files.items()}
    try:
        return load_dataset(builder, name=content_config_name(files), data_files=data_files, **kwargs)
    except ValueError as e:
        if "corresponds to no data" not in str(e):
            raise
        raise ValueError(f"a split of {files} has no rows ({e}); an empty corpus cannot be used.") from e


def _load_hub(args: DataArguments) -> DatasetDict:
    what = repr(args.dataset_name) + (f" (config {args.dataset_config_name!r})" if args.dataset_config_name else "")
    try:
        return load_dataset(args.dataset_name, args.dataset_config_name)
    except (FileNotFoundError, ConnectionError) as e:
        raise FileNotFoundError(
            f"dataset {what} could not be found or downloaded ({type(e).__name__}: {e}). Check the name on "
            "https://huggingface.co/datasets, the network (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), or use "
            "--train_file for local files."
        ) from e
    except ValueError as e:
        raise ValueError(f"dataset {what} could not be loaded: {e}") from e


def _complete_splits(raw: DatasetDict, percentage: int, source: str) -> DatasetDict:
    splits = {}
    for name, ds in raw.items():
        name = _SPLIT_ALIASES.get(name, name)
        if name in SPLITS:
            splits[name] = ds
    if "train" not in splits:
        raise ValueError(f"{source} has no 'train' split (splits: {list(raw)}); pass --train_file.")
    missing = [s for s in ("validation", "test") if s not in splits]
    if missing:
        if not 0 < percentage < 50:
            raise ValueError(f"validation_split_percentage={percentage} must be in 1..49.")
        train = splits["train"]
        n = len(train)
        take = max(1, n * percentage // 100)
        if n < take * len(missing) + 1:
            raise ValueError(
                f"{source}: the train split has {n} lines, too few to carve off {missing} "
                f"({percentage}% each); give --validation_file/--test_file or more text."
            )
        # Contiguous tail of the training text, so the held-out streams read like the corpus.
        end = n
        for split in missing:
            splits[split] = train.select(range(end - take, end))
            end -= take
        splits["train"] = train.select(range(end))
    return DatasetDict({s: splits[s] for s in SPLITS})


def load_corpus(args: DataArguments) -> DatasetDict:
    """Load the text: local files, a named classic corpus, a Hub dataset, or the embedded corpus.

    Local files are cached by `datasets` under a config named after their content (`content_config_name`).

    Args:
        args (`DataArguments`): ``dataset_name`` (a name of `hwlm.corpora.NAMED_CORPORA` or a Hub id, with
            ``dataset_config_name``), or ``train_file`` (with
            optional ``validation_file``/``test_file``), ``text_column``, ``validation_split_percentage``,
            ``replace_invalid_utf8``.
    Returns:
        `DatasetDict` with splits ``train``, ``validation``, ``test`` and one column ``text`` (str),
        one row per line (text files) or per record. Missing validation/test splits are carved off
        the end of train (``validation_split_percentage`` percent each).
    Raises:
        FileNotFoundError: a missing file or an unknown dataset, named.
        ConnectionError: a named corpus could not be downloaded (see `hwlm.corpora.download`).
        ValueError: both a dataset and files, no train file, a missing text column, bytes that are not
            UTF-8 (file and line named), or an empty split.
    """
    files = _local_files(args)
    named = corpora.named_corpus(args.dataset_name)
    if args.dataset_name and files and not named:
        raise ValueError(
            f"give either --dataset_name ({args.dataset_name!r}) or local files ({files}), not both."
        )
    if files and "train" not in files:
        raise ValueError(f"--train_file is required when giving {list(files)} files.")
    if files:  # local files override a named corpus (e.g. the one a preset names)
        source, raw = f"files {files}", _load_files(files, args)
    elif named:
        paths, builder = corpora.resolve(named)
        raw = _load_files(paths, args, builder=builder)
        source = f"corpus {named.name!r} ({'local copy' if builder == 'text' and corpora.local_copy(named) else 'download'})"
        corpora.check_line_counts(named, {s: len(ds) for s, ds in raw.items()}, source)
    elif args.dataset_name:
        source, raw = f"dataset {args.dataset_name!r}", _load_hub(args)
    else:
        source, raw = "the embedded corpus", load_embedded_corpus()
    if not isinstance(raw, DatasetDict):
        raw = DatasetDict({"train": raw})
    corpus = _complete_splits(raw, args.validation_split_percentage, source)
    for split, ds in corpus.items():
        if args.text_column not in ds.column_names:
            raise ValueError(
                f"{source}, split {split!r}: no column {args.text_column!r} (columns: {ds.column_names}); "
                "pass --text_column <name>."
            )
        ds = ds.select_columns([args.text_column])
        _check_text_column(ds, args.text_column, source, split)
        if args.text_column != "text":
            ds = ds.rename_column(args.text_column, "text")
        if len(ds) == 0:
            raise ValueError(f"{source}, split {split!r} is empty (0 lines); an empty corpus cannot be used.")
        corpus[split] = ds
    return corpus


def _check_text_column(ds: Dataset, column: str, source: str, split: str) -> None:
    """The text column holds strings and no NUL byte (a NUL would silently become part of a word)."""
    feature = ds.features[column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(
            f"{source}, split {split!r}: column {column!r} holds {getattr(feature, 'dtype', feature)}, not text; "
            "pass --text_column naming a column of strings."
        )
    has_nul = pc.match_substring(ds.data.column(column), "\x00")  # an Arrow scan of the (mapped) table
    if pc.any(has_nul).as_py():
        row = pc.index(has_nul, True).as_py()
        raise ValueError(
            f"{source}, split {split!r}: row {row + 1} (line {row + 1} of a text file) holds a NUL byte (0x00), "
            "which would become part of a word. Remove NUL bytes from the input (e.g. tr -d '\\000')."
        )


def load_or_train_tokenizer(
    args: DataArguments,
    corpus: DatasetDict,
    tokenizer_args: Optional[TokenizerArguments] = None,
    *,
    show_progress: bool = False,
) -> PreTrainedTokenizerBase:
    """The tokenizer for a corpus: ``args.tokenizer_name`` if given, else the default, else a new one.

    Without ``tokenizer_name``: the embedded corpus uses the committed ``tokenizer/`` (when it exists
    and no tokenizer setting is overridden); any other corpus gets a tokenizer trained on its train
    split with ``tokenizer_args`` (fields left at None take the corpus defaults, see `TokenizerArguments`).

    Args:
        args (`DataArguments`), corpus (`DatasetDict` from `load_corpus`),
        tokenizer_args (`TokenizerArguments`, *optional*), show_progress (`bool`).
    Returns:
        a transformers tokenizer with ``<unk>``, ``<eos>``, ``<pad>``.
    """
    return tokenizer_and_train_ids(args, corpus, tokenizer_args, show_progress=show_progress)[0]


def tokenizer_and_train_ids(
    args: DataArguments,
    corpus: DatasetDict,
    tokenizer_args: Optional[TokenizerArguments] = None,
    *,
    encode_train: bool = False,
    show_progress: bool = False,
) -> tuple[PreTrainedTokenizerBase, Optional[pa.ChunkedArray]]:
    """`load_or_train_tokenizer`, and with ``encode_train`` the train split's ids when the tokenizer is trained
    here: counted and encoded from one pass over the text (`count_and_encode`), for `prepare_datasets`'s
    ``encoded``. Returns ``(tokenizer, train ids or None)``."""
    if args.tokenizer_name:
        return load_tokenizer(args.tokenizer_name), None
    tokenizer_args = tokenizer_args or TokenizerArguments()
    embedded = not args.dataset_name and not args.train_file
    overridden = any(v is not None for v in asdict(tokenizer_args).values())
    if embedded and not overridden and (REPO_TOKENIZER_DIR / "tokenizer.json").exists():
        return load_tokenizer(REPO_TOKENIZER_DIR), None
    settings = tokenizer_args.resolved(default_tokenizer_settings(args))
    if encode_train:
        return count_and_encode(corpus["train"], settings)
    return train_on_split(corpus["train"], settings, show_progress=show_progress), None


def default_tokenizer_settings(args: DataArguments) -> dict:
    """Tokenizer settings for fields the user leaves unset: by corpus.

    The embedded corpus: `EMBEDDED_TOKENIZER_SETTINGS` (what built ``tokenizer/``). A raw named corpus
    (``wikitext-*-raw``): `RAW_TEXT_SETTINGS` (``treebank`` pre-tokenizer, words seen fewer than 3 times
    dropped, as WikiText did). Anything else, including the user's own files: `PRETOKENIZED_SETTINGS`.

    Returns:
        `dict` of `train_word_tokenizer` keyword arguments.
    """
    if not args.dataset_name and not args.train_file:
        return EMBEDDED_TOKENIZER_SETTINGS
    named = corpora.named_corpus(args.dataset_name)
    if named is not None and named.raw and not args.train_file:
        return RAW_TEXT_SETTINGS
    return PRETOKENIZED_SETTINGS


def train_on_split(train: Dataset, settings: dict, *, show_progress: bool = False) -> PreTrainedTokenizerBase:
    """Train a word-level tokenizer on a split's ``text`` column, streamed as Arrow batches of 100,000 rows.

    Args:
        train (`Dataset`): with a ``text`` column.
        settings (`dict`): keyword arguments of `train_word_tokenizer`.
    Returns:
        the trained transformers tokenizer.
    """
    batches = (b.column("text") for b in train.with_format("arrow").iter(batch_size=100_000))
    return train_word_tokenizer(batches, show_progress=show_progress, **settings)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


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

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.backend = tokenizer.backend_tokenizer
        self.eos_id = tokenizer.eos_token_id
        vocab = self.backend.get_vocab(with_added_tokens=True)
        words = list(vocab)
        if is_whitespace_only(self.backend):  # a word maps to itself unless a special token hides inside it
            direct = [(w, vocab[w]) for w in words if w in SPECIAL_TOKENS or not _SPECIAL_PATTERN.search(w)]
        else:
            encoded = self.backend.encode_batch_fast(words, add_special_tokens=False)
            direct = [(w, vocab[w]) for w, e in zip(words, encoded) if e.ids == [vocab[w]]]
        self.direct_words = pa.array([w for w, _ in direct], pa.large_string())
        self.direct_ids = np.array([i for _, i in direct], dtype=np.int32)

    def encode(self, lines: pa.Array) -> pa.Array:
        """Encode lines.

        Args:
            lines (`pyarrow.Array` of strings): one corpus line per element (nulls count as empty lines).
        Returns:
            `pyarrow.ListArray` of int32: per line its ids followed by ``<eos>`` (an empty line: just ``<eos>``).
        """
        lines = pc.fill_null(lines, "")
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
        plain, odd = split_odd_whitespace(lines)
        if odd:
            self.odd_lines += odd
            self.batches.append(lines)
        parts = split_whitespace(plain)
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


def _flat_ids(ds: Dataset) -> np.ndarray:
    """All ``input_ids`` of a split as one 1-D int array, via Arrow (no Python loop over tokens)."""
    if ds._indices is not None:
        ds = ds.flatten_indices()
    column = ds.data.column("input_ids")
    if column.num_chunks == 0:
        return np.zeros(0, dtype=np.int32)
    return pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy(zero_copy_only=False)


def _blocks_of(flat: np.ndarray, block_size: int, fingerprint: str) -> Dataset:
    """``flat`` (N,) as rows of ``block_size`` tokens, without copying the ids.

    The fingerprint is given (derived from the stream's) because a `Dataset` built without one hashes its whole
    table to make one: for a WikiText-103-sized split that serialisation alone took 2.4 GB of extra peak memory.
    """
    n_blocks = len(flat) // block_size
    values = pa.array(flat[: n_blocks * block_size].astype(np.int32, copy=False))  # zero-copy view
    rows = pa.FixedSizeListArray.from_arrays(values, block_size)  # (n_blocks, block_size)
    return Dataset(InMemoryTable(pa.table({"input_ids": rows, "labels": rows})), fingerprint=fingerprint)


@dataclass
class PreparedData:
    """A tokenised corpus in the two layouts training uses.

    Attributes:
        streams (`DatasetDict`): per split, one row per corpus line, ``input_ids`` (int32) ending in ``<eos>``.
        blocks (`DatasetDict`): per split, rows of ``input_ids`` and ``labels``, exactly ``block_size`` each.
        tokenizer_fingerprint (`str`): `tokenizer_fingerprint` of the tokenizer used.
        vocab_size (`int`): entries of that tokenizer, special tokens included.
        block_size (`int`).
        stats (`dict`): per split ``lines``, ``words``, ``tokens`` (with ``<eos>``), ``unk``, ``oov_rate``, ``blocks``.
        source (`dict`): see `describe_source`.
        tokenizer: the tokenizer, when known.
        path (`Path`, *optional*): the folder it was saved to or loaded from.
    """

    streams: DatasetDict
    blocks: DatasetDict
    tokenizer_fingerprint: str
    vocab_size: int
    block_size: int
    stats: dict
    source: dict = field(default_factory=dict)
    tokenizer: Optional[PreTrainedTokenizerBase] = None
    path: Optional[Path] = None
    token_files: dict = field(default_factory=dict)

    def stream_tensor(self, split: str) -> torch.LongTensor:
        """The whole split as one token stream, memory-mapped when a token file exists.

        A prepared folder holds ``tokens/<split>.npy`` (int64), and preparation without a folder writes the
        same file next to the datasets cache; the tensor then maps that file copy-on-write, so its pages are
        read on demand and shared by every process that maps it (training on 100M tokens keeps no private
        copy of the stream: `hwlm.batching.StreamLoader` reads its streams as views of this tensor).

        Args:
            split (`str`): ``"train"``, ``"validation"`` or ``"test"``.
        Returns:
            `torch.LongTensor` of shape (N,), N = the split's token count (``<eos>`` included).
        """
        if split not in self.streams:
            raise ValueError(f"split {split!r} is not prepared; available: {list(self.streams)}.")
        import torch  # here, not at the top: hwlm-prepare and hwlm-tokenizer never need it

        path = self.token_files.get(split)
        if path is not None and Path(path).is_file():
            return torch.from_numpy(np.load(path, mmap_mode="c"))  # "c": writable view, pages shared until written
        return torch.from_numpy(_flat_ids(self.streams[split]).astype(np.int64))

    def block_tensor(self, split: str) -> torch.LongTensor:
        """The split cut into rows of ``block_size`` tokens, as a view of `stream_tensor` (no copy).

        Returns:
            `torch.LongTensor` of shape (num_blocks, block_size), equal to ``blocks[split]["input_ids"]``.
        """
        stream = self.stream_tensor(split)
        n = len(stream) // self.block_size
        return stream[: n * self.block_size].view(n, self.block_size)  # (num_blocks, block_size)


def write_token_file(flat: np.ndarray, path: Union[str, Path], chunk: int = 1 << 24) -> Path:
    """Write a token stream as an int64 ``.npy`` file, chunk by chunk, atomically (temporary file + rename).

    Args:
        flat (`np.ndarray` (N,)): token ids (any integer type).
        path: the ``.npy`` file.
        chunk (`int`): ids converted per step, so memory stays at ``chunk`` int64 values beyond ``flat``.
    Returns:
        the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # plain writes, not a writable memmap: mapped output pages would count in this process's resident memory
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int64)),
                                                "fortran_order": False, "shape": (len(flat),)})
        for start in range(0, len(flat), chunk):
            f.write(np.ascontiguousarray(flat[start : start + chunk], dtype=np.int64).tobytes())
    os.replace(tmp, path)
    return path


def prepare_datasets(
    corpus: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    num_proc: Optional[int] = None,
    overwrite_cache: bool = False,
    output_dir: Optional[Union[str, Path]] = None,
    source: Optional[dict] = None,
    encoded: Optional[dict[str, pa.ChunkedArray]] = None,
) -> PreparedData:
    """Tokenise every split (batched ``Dataset.map``, datasets cache) and lay it out as streams and blocks.

    Args:
        corpus (`DatasetDict`): from `load_corpus` (a ``text`` column).
        tokenizer: a transformers tokenizer with an ``eos_token``.
        block_size (`int`): tokens per row of ``blocks``.
        num_proc (`int`, *optional*): processes for the tokenisation map.
        overwrite_cache (`bool`): recompute instead of loading the cached map result.
        output_dir (`str` or `Path`, *optional*): save there (see the module docstring for the layout).
        source (`dict`, *optional*): recorded in ``hwlm_data.json`` (see `describe_source`).
        encoded (`dict[str, pyarrow.ChunkedArray]`, *optional*): splits already encoded with ``tokenizer``
            (``input_ids`` per line, e.g. the train split from `count_and_encode`); they are used as they are,
            in memory, instead of a cached map.
    Returns:
        `PreparedData`.
    Raises:
        ValueError: ``block_size`` < 1, a split with no words (only empty lines), or a split with fewer
            tokens than ``block_size``.
    """
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1.")
    fingerprint = tokenizer_fingerprint(tokenizer)
    encoder = ArrowLineEncoder(tokenizer)
    features = Features({"input_ids": List(Value("int32"))})
    streams = DatasetDict()
    for split, ds in corpus.items():
        if encoded and split in encoded:
            if len(encoded[split]) != len(ds):
                raise ValueError(f"encoded[{split!r}] has {len(encoded[split])} rows, the split {len(ds)}")
            fp = hashlib.sha256(f"{ds._fingerprint}|{fingerprint}|hwlm-streams-v2".encode()).hexdigest()[:16]
            streams[split] = Dataset(InMemoryTable(pa.table({"input_ids": encoded[split]})), fingerprint=fp)
            continue
        # An explicit fingerprint: the datasets cache key is (input data, tokenizer, this code's version),
        # independent of how dill happens to hash the encoder object.
        new_fp = hashlib.sha256(f"{ds._fingerprint}|{fingerprint}|hwlm-streams-v2".encode()).hexdigest()[:16]
        streams[split] = ds.with_format("arrow").map(
            encoder,
            batched=True,
            batch_size=10_000,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            features=features,
            load_from_cache_file=not overwrite_cache,
            new_fingerprint=new_fp,
            desc=f"Tokenising {split}",
        ).with_format(None)
    unk_id, eos_id = unk_token_id(tokenizer), tokenizer.eos_token_id
    stats, blocks, token_files = {}, DatasetDict(), {}
    for split, ds in streams.items():
        flat = _flat_ids(ds)
        lines, tokens = len(ds), len(flat)
        words = tokens - lines
        if words == 0:
            raise ValueError(
                f"split {split!r} has no words: its {lines} lines are all empty; check the input or the "
                "text column."
            )
        if tokens < block_size:
            raise ValueError(
                f"block_size={block_size} is larger than split {split!r}, which has {tokens} tokens; "
                f"use --block_size {tokens} or less, or more text."
            )
        unk = int(np.count_nonzero(flat == unk_id))
        stats[split] = {"lines": lines, "words": words, "tokens": tokens, "eos": int(np.count_nonzero(flat == eos_id)),
                        "unk": unk, "oov_rate": unk / words, "blocks": tokens // block_size}
        blocks_fp = hashlib.sha256(f"{ds._fingerprint}|blocks|{block_size}".encode()).hexdigest()[:16]
        blocks[split] = _blocks_of(flat, block_size, blocks_fp)
        token_files[split] = _cached_token_file(ds, flat)
    prepared = PreparedData(
        streams=streams, blocks=blocks, tokenizer_fingerprint=fingerprint, vocab_size=len(tokenizer),
        block_size=block_size, stats=stats, source=source or {}, tokenizer=tokenizer,
        token_files={s: f for s, f in token_files.items() if f is not None},
    )
    if output_dir is not None:
        save_prepared(prepared, output_dir)
    return prepared


def _cached_token_file(ds: Dataset, flat: np.ndarray) -> Optional[Path]:
    """The split's int64 token file next to its datasets cache file (written once per map fingerprint)."""
    if not ds.cache_files:
        return None  # an in-memory dataset: stream_tensor concatenates the rows instead
    path = Path(ds.cache_files[0]["filename"]).parent / f"hwlm-tokens-{ds._fingerprint}.npy"
    if not path.is_file():
        write_token_file(flat, path)
    return path


def save_prepared(prepared: PreparedData, output_dir: Union[str, Path]) -> Path:
    """Write a `PreparedData` to ``output_dir`` (streams/, blocks/, tokenizer/, hwlm_data.json).

    Returns:
        the folder as a `Path`.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared.streams.save_to_disk(str(out / "streams"))
    prepared.blocks.save_to_disk(str(out / "blocks"))
    token_files = {}
    for split in prepared.streams:
        source = prepared.token_files.get(split)
        target = out / "tokens" / f"{split}.npy"
        if source is not None and Path(source).is_file():  # the cached file, copied without mapping it
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target.with_name(f".{target.name}.tmp"))
            os.replace(target.with_name(f".{target.name}.tmp"), target)
            token_files[split] = target
        else:
            token_files[split] = write_token_file(_flat_ids(prepared.streams[split]), target)
    prepared.token_files = token_files
    if prepared.tokenizer is not None:
        prepared.tokenizer.save_pretrained(str(out / "tokenizer"))
    meta = {
        "format_version": PREPARED_FORMAT_VERSION,
        "tokenizer_fingerprint": prepared.tokenizer_fingerprint,
        "vocab_size": prepared.vocab_size,
        "block_size": prepared.block_size,
        "line_convention": "each line -> its words + one <eos>; an empty line -> one <eos>",
        "splits": prepared.stats,
        "token_files": {split: f"tokens/{split}.npy" for split in prepared.streams},
        "source": prepared.source,
    }
    (out / "hwlm_data.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    prepared.path = out
    return out


def load_prepared(
    path: Union[str, Path], tokenizer: Optional[Union[str, Path, PreTrainedTokenizerBase]] = None
) -> PreparedData:
    """Load a folder written by `prepare_datasets` / ``hwlm-prepare``, checking the tokenizer matches.

    Args:
        path: the prepared folder.
        tokenizer: the tokenizer the caller will train with (object or folder). Default: the copy
            saved in ``path/tokenizer``.
    Returns:
        `PreparedData`.
    Raises:
        FileNotFoundError: ``path`` holds no ``hwlm_data.json``.
        ValueError: the tokenizer's fingerprint differs from the one recorded at preparation.
    """
    folder = Path(path)
    meta_path = folder / "hwlm_data.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not a prepared data folder (no hwlm_data.json); create it with "
            f"hwlm-prepare --output_dir {folder}."
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if tokenizer is None and (folder / "tokenizer").is_dir():
        tokenizer = folder / "tokenizer"
    name = str(tokenizer) if isinstance(tokenizer, (str, Path)) else type(tokenizer).__name__
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer)
    if tokenizer is not None:
        fingerprint = tokenizer_fingerprint(tokenizer)
        if fingerprint != meta["tokenizer_fingerprint"]:
            raise ValueError(
                f"the data in {str(folder)!r} was prepared with a different tokenizer: fingerprint "
                f"{meta['tokenizer_fingerprint']} recorded, {fingerprint} for tokenizer {name}. Token ids "
                f"would not match; use {folder / 'tokenizer'} or re-run hwlm-prepare with --tokenizer_name."
            )
    _check_token_files(folder, meta)
    return PreparedData(
        streams=load_from_disk(str(folder / "streams")),
        blocks=load_from_disk(str(folder / "blocks")),
        tokenizer_fingerprint=meta["tokenizer_fingerprint"],
        vocab_size=meta["vocab_size"],
        block_size=meta["block_size"],
        stats=meta["splits"],
        source=meta.get("source", {}),
        tokenizer=tokenizer,
        path=folder,
        token_files={s: folder / f for s, f in meta.get("token_files", {}).items()},
    )


def _check_token_files(folder: Path, meta: dict) -> None:
    """Refuse a prepared folder whose token files do not hold the counts ``hwlm_data.json`` records (a folder an
    older hwlm left half-rewritten, or a truncated file): training on it would be silently wrong."""
    for split, name in meta.get("token_files", {}).items():
        expected = (meta.get("splits") or {}).get(split, {}).get("tokens")
        try:
            found = len(np.load(folder / name, mmap_mode="r"))
        except (OSError, ValueError) as err:
            found = f"an unreadable file ({' '.join(str(err).split())[:80]})"
        if found != expected:
            raise ValueError(
                f"the prepared folder {str(folder)!r} is inconsistent: hwlm_data.json records {expected} {split} "
                f"tokens but {name} holds {found} (a preparation was interrupted, or the file was changed). "
                f"Run hwlm-prepare --output_dir {folder} again."
            )


def resolve_tokenizer(args: DataArguments, corpus: DatasetDict) -> PreTrainedTokenizerBase:
    """`load_or_train_tokenizer` with default tokenizer settings (the name the training loop uses).

    Args:
        args (`DataArguments`), corpus (`DatasetDict` from `load_corpus`).
    Returns:
        a transformers tokenizer.
    """
    return load_or_train_tokenizer(args, corpus)
