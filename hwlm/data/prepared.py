"""The prepared-data folder: `prepare_datasets` (streams, blocks, token files), `save_prepared` / `load_prepared`
(written into a staging folder and swapped in whole, checked against ``hwlm_data.json`` when read) and
`PreparedData`, what training and evaluation read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from hwlm.errors import UserError


if TYPE_CHECKING:  # torch is imported where a tensor is made (PreparedData.stream_tensor)
    import torch

from hwlm.data.encoding import ArrowLineEncoder, blocks_of, content_digest, flat_ids
from hwlm.tokenization import (
    load_tokenizer,
    tokenizer_fingerprint,
    unk_token_id,
)


PREPARED_FORMAT_VERSION = 2  # 2: tokens/<split>.npy (memory-mapped streams); 1 is still read


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
            raise UserError(f"split {split!r} is not prepared; available: {list(self.streams)}.")
        import torch  # here, not at the top: hwlm-prepare and hwlm-tokenizer never need it

        path = self.token_files.get(split)
        if path is not None and Path(path).is_file():
            return torch.from_numpy(np.load(path, mmap_mode="c"))  # "c": writable view, pages shared until written
        return torch.from_numpy(flat_ids(self.streams[split]).astype(np.int64))

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
        raise UserError(f"block_size={block_size} must be >= 1.")
    fingerprint = tokenizer_fingerprint(tokenizer)
    encoder = ArrowLineEncoder(tokenizer)
    features = Features({"input_ids": List(Value("int32"))})
    streams, keys = DatasetDict(), {}  # keys: what identifies each split's token stream (the blocks' fingerprint)
    for split, ds in corpus.items():
        if encoded and split in encoded:
            if len(encoded[split]) != len(ds):
                raise UserError(f"encoded[{split!r}] has {len(encoded[split])} rows, the split {len(ds)}")
            # given a fingerprint (else datasets would serialise the whole table to make one): the ids' own hash
            keys[split] = f"{fingerprint}-{content_digest(encoded[split])}"
            streams[split] = Dataset(InMemoryTable(pa.table({"input_ids": encoded[split]})), fingerprint=keys[split])
            continue
        # The datasets cache key: the input split's fingerprint and the encoder, which hashes as its tokenizer's
        # content and format (ArrowLineEncoder.__reduce__).
        streams[split] = ds.with_format("arrow").map(
            encoder,
            batched=True,
            batch_size=10_000,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            features=features,
            load_from_cache_file=not overwrite_cache,
            desc=f"Tokenising {split}",
        ).with_format(None)
    unk_id, eos_id = unk_token_id(tokenizer), tokenizer.eos_token_id
    stats, blocks, token_files = {}, DatasetDict(), {}
    for split, ds in streams.items():
        flat = flat_ids(ds)
        lines, tokens = len(ds), len(flat)
        words = tokens - lines
        if words == 0:
            raise UserError(
                f"split {split!r} has no words: its {lines} lines are all empty; check the input or the "
                "text column."
            )
        if tokens < block_size:
            raise UserError(
                f"block_size={block_size} is larger than split {split!r}, which has {tokens} tokens; "
                f"use --block_size {tokens} or less, or more text."
            )
        unk = int(np.count_nonzero(flat == unk_id))
        stats[split] = {"lines": lines, "words": words, "tokens": tokens, "eos": int(np.count_nonzero(flat == eos_id)),
                        "unk": unk, "oov_rate": unk / words, "blocks": tokens // block_size}
        key = keys.get(split) or _stream_key(ds, flat, fingerprint)
        blocks_fp = hashlib.sha256(f"{key}|blocks|{block_size}".encode()).hexdigest()[:16]
        blocks[split] = blocks_of(flat, block_size, blocks_fp)
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
    cache_file = Path(ds.cache_files[0]["filename"])  # named by datasets after the map's fingerprint
    path = cache_file.parent / f"hwlm-tokens-{cache_file.stem}.npy"
    if not path.is_file():
        write_token_file(flat, path)
    return path


def _stream_key(ds: Dataset, flat: np.ndarray, tokenizer_fingerprint: str) -> str:
    """What identifies a mapped split's token stream: its datasets cache file, named after the map's fingerprint
    (which covers the input split and the tokenizer), or for one held in memory the tokenizer's and the ids' hashes
    (SHA-256: 0.2 s per 100M tokens)."""
    if ds.cache_files:
        return Path(ds.cache_files[0]["filename"]).stem
    return f"{tokenizer_fingerprint}-{hashlib.sha256(np.ascontiguousarray(flat)).hexdigest()[:16]}"


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
            token_files[split] = write_token_file(flat_ids(prepared.streams[split]), target)
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
            raise UserError(
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
            raise UserError(
                f"the prepared folder {str(folder)!r} is inconsistent: hwlm_data.json records {expected} {split} "
                f"tokens but {name} holds {found} (a preparation was interrupted, or the file was changed). "
                f"Run hwlm-prepare --output_dir {folder} again."
            )

