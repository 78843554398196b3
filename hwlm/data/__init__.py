"""Corpora in, token streams and blocks out, in four rooms:

    sources.py    where the text comes from: the embedded corpus, local files, a Hub dataset (checked, described)
    vocab.py      which tokenizer it gets: a named one, the committed default, or one trained on the train split
    encoding.py   text to ids through Arrow (one whitespace split; counting and encoding in one pass)
    prepared.py   the prepared-data folder: prepare_datasets, save_prepared / load_prepared, PreparedData

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

from hwlm.data.encoding import ArrowLineEncoder, CountingEncoder, blocks_of, count_and_encode, flat_ids
from hwlm.data.prepared import (
    PREPARED_FORMAT_VERSION,
    PreparedData,
    load_prepared,
    prepare_datasets,
    save_prepared,
    write_token_file,
)
from hwlm.data.sources import (
    EMBEDDED_SPLIT_PERCENT,
    EMBEDDED_TOKENIZER_SETTINGS,
    RAW_TEXT_SETTINGS,
    REPO_TOKENIZER_DIR,
    SPLITS,
    check_utf8,
    content_config_name,
    describe_source,
    embedded_corpus_info,
    embedded_corpus_lines,
    embedded_split_of,
    load_corpus,
    load_embedded_corpus,
    split_lines,
)
from hwlm.data.vocab import (
    default_tokenizer_settings,
    load_or_train_tokenizer,
    resolve_tokenizer,
    tokenizer_and_train_ids,
    train_on_split,
)
from hwlm.settings import DataArguments  # re-exported: defined where --help can read it cheaply
from hwlm.tokenization import PRETOKENIZED_SETTINGS, TokenizerArguments  # re-exported for the data flags' users

__all__ = [
    "ArrowLineEncoder", "CountingEncoder", "DataArguments", "EMBEDDED_SPLIT_PERCENT", "EMBEDDED_TOKENIZER_SETTINGS",
    "PREPARED_FORMAT_VERSION", "PRETOKENIZED_SETTINGS", "PreparedData", "RAW_TEXT_SETTINGS", "REPO_TOKENIZER_DIR",
    "SPLITS", "TokenizerArguments", "blocks_of", "check_utf8", "content_config_name", "count_and_encode",
    "default_tokenizer_settings", "describe_source", "embedded_corpus_info", "embedded_corpus_lines",
    "embedded_split_of", "flat_ids", "load_corpus", "load_embedded_corpus", "load_or_train_tokenizer",
    "load_prepared", "prepare_datasets", "resolve_tokenizer", "save_prepared", "split_lines",
    "tokenizer_and_train_ids", "train_on_split", "write_token_file",
]
