"""Where a corpus comes from: the embedded corpus (Python's reference manual), local files (text, JSON, CSV,
Parquet) or a Hub dataset, each split checked (UTF-8, NUL bytes, a text column) and described with the content
fingerprints of local files."""

from __future__ import annotations

import hashlib
import io
import json
import platform
from pathlib import Path
from typing import Any, Optional, Union

import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, Value, load_dataset

from hwlm import corpora
from hwlm.settings import DataArguments
from hwlm.errors import UserError



SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}
#: The committed default tokenizer, built from the embedded corpus by ``hwlm-tokenizer``.
REPO_TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "tokenizer"
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
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def split_lines(text: str) -> list[str]:
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
        out[embedded_split_of(key)].extend(split_lines(topics[key]))
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
                raise UserError(
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
            raise UserError(f"{flag} {name!r} is empty (0 bytes); an empty corpus cannot be used.")
        builders.add(_BUILDERS.get(path.suffix.lower(), "text"))  # .txt, .tokens, ... -> one row per line
    if len(builders) > 1:
        raise UserError(
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
        raise UserError(f"a split of {files} has no rows ({e}); an empty corpus cannot be used.") from e


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
        raise UserError(f"dataset {what} could not be loaded: {e}") from e


def _complete_splits(raw: DatasetDict, percentage: int, source: str) -> DatasetDict:
    splits = {}
    for name, ds in raw.items():
        name = _SPLIT_ALIASES.get(name, name)
        if name in SPLITS:
            splits[name] = ds
    if "train" not in splits:
        raise UserError(f"{source} has no 'train' split (splits: {list(raw)}); pass --train_file.")
    missing = [s for s in ("validation", "test") if s not in splits]
    if missing:
        if not 0 < percentage < 50:
            raise UserError(f"validation_split_percentage={percentage} must be in 1..49.")
        train = splits["train"]
        n = len(train)
        take = max(1, n * percentage // 100)
        if n < take * len(missing) + 1:
            raise UserError(
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
        raise UserError(
            f"give either --dataset_name ({args.dataset_name!r}) or local files ({files}), not both."
        )
    if files and "train" not in files:
        raise UserError(f"--train_file is required when giving {list(files)} files.")
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
            raise UserError(
                f"{source}, split {split!r}: no column {args.text_column!r} (columns: {ds.column_names}); "
                "pass --text_column <name>."
            )
        ds = ds.select_columns([args.text_column])
        _check_text_column(ds, args.text_column, source, split)
        if args.text_column != "text":
            ds = ds.rename_column(args.text_column, "text")
        if len(ds) == 0:
            raise UserError(f"{source}, split {split!r} is empty (0 lines); an empty corpus cannot be used.")
        corpus[split] = ds
    return corpus


def _check_text_column(ds: Dataset, column: str, source: str, split: str) -> None:
    """The text column holds strings and no NUL byte (a NUL would silently become part of a word)."""
    feature = ds.features[column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise UserError(
            f"{source}, split {split!r}: column {column!r} holds {getattr(feature, 'dtype', feature)}, not text; "
            "pass --text_column naming a column of strings."
        )
    has_nul = pc.match_substring(ds.data.column(column), "\x00")  # an Arrow scan of the (mapped) table
    if pc.any(has_nul).as_py():
        row = pc.index(has_nul, True).as_py()
        raise UserError(
            f"{source}, split {split!r}: row {row + 1} (line {row + 1} of a text file) holds a NUL byte (0x00), "
            "which would become part of a word. Remove NUL bytes from the input (e.g. tr -d '\\000')."
        )

