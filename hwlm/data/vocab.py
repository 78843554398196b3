"""Which tokenizer a corpus gets: ``--tokenizer_name``, the committed ``tokenizer/`` for the embedded corpus, or one
trained on the train split (with the corpus' default settings, counted and encoded in one pass when preparing)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import pyarrow as pa
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from hwlm import corpora
from hwlm.settings import DataArguments

from hwlm.data.encoding import count_and_encode
from hwlm.data.sources import EMBEDDED_TOKENIZER_SETTINGS, RAW_TEXT_SETTINGS, REPO_TOKENIZER_DIR
from hwlm.tokenization import (
    PRETOKENIZED_SETTINGS,
    TokenizerArguments,
    load_tokenizer,
    train_word_tokenizer,
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



def resolve_tokenizer(args: DataArguments, corpus: DatasetDict) -> PreTrainedTokenizerBase:
    """`load_or_train_tokenizer` with default tokenizer settings (the name the training loop uses).

    Args:
        args (`DataArguments`), corpus (`DatasetDict` from `load_corpus`).
    Returns:
        a transformers tokenizer.
    """
    return load_or_train_tokenizer(args, corpus)

