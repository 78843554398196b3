"""The word-level tokenizer: built from `tokenizers` components, wrapped for `AutoTokenizer`.

The pipeline, component by component::

    normalizer     optional NFKC, optional lowercasing
    pre-tokenizer  "whitespace": split on Unicode whitespace only (PTB, WikiText: already tokenized)
                   "words":      also split punctuation off words (\\w+|[^\\w\\s]+: runs of punctuation stay together)
                   "treebank":   raw text tokenized the way WikiText is (Treebank-style, see `TREEBANK_TOKEN_PATTERN`):
                                 normalizer rules write numbers and hyphenated words as WikiText does
                                 ("1,000" -> 1 @,@ 000, "3.5" -> 3 @.@ 5, "well-known" -> well @-@ known), then
                                 punctuation is split off one mark at a time, an apostrophe starts a new word
                                 ("wasn't" -> wasn 't, "O'Brien" -> O 'Brien), abbreviations ("U.S.", "Dr.", "e.g."),
                                 "...", URLs and words with inner dots ("About.com") stay whole
    model          WordLevel, unknown words -> <unk>
    decoder        writes a space before every word, so decoded words can be appended to any text

Special tokens come first and keep their ids whatever the corpus:
``<unk>`` = 0, ``<eos>`` = 1, ``<pad>`` = 2; words follow by decreasing frequency.

Encoding a prompt never appends ``<eos>``: the data pipeline (``hwlm.data``) appends one
``<eos>`` per corpus line itself (a post-processor would also hit prompts at generation time).

Over 500 lines on purpose: the tokenizer's rules (pre-tokenizers, special tokens, vocabulary order) and the Arrow word
counting that must reproduce them exactly live in one module, so a change to one is seen beside the other.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerBase, TokenizersBackend  # no torch; AutoTokenizer (which imports it) is
                                                                   # imported where a folder is loaded

from .settings import PRE_TOKENIZERS, TokenizerArguments  # noqa: F401  (re-exported: defined where --help reads them)
from hwlm.errors import UserError

UNK_TOKEN = "<unk>"
EOS_TOKEN = "<eos>"
PAD_TOKEN = "<pad>"
#: Special tokens in id order: ``<unk>`` = 0, ``<eos>`` = 1, ``<pad>`` = 2.
SPECIAL_TOKENS = (UNK_TOKEN, EOS_TOKEN, PAD_TOKEN)

#: Abbreviations that keep their period (case-sensitive): those WikiText writes with their period more often
#: than split off. Abbreviations that also end sentences there (Jr, Inc, Co, Ltd, Vol, c, al) are left out:
#: WikiText splits the period off those more often than not.
TREEBANK_ABBREVIATIONS = (
    "Mr", "Mrs", "Ms", "Dr", "St", "Sr", "No", "Nos", "Op", "vs", "v", "pp", "p", "Bros", "Corp", "Lt", "Gen", "Col",
    "Capt", "Sgt", "Cpl", "Adm", "Rev", "Prof", "Mt", "Ft", "Gov", "Sen", "Rep", "Jan", "Feb", "Aug", "Sept", "Oct",
    "Nov", "Dec", "cf", "approx", "var", "Nr", "sp", "ssp",
)
_W = r"\p{L}\p{M}\p{N}_"  # word characters: letters (any script), combining marks, digits, underscore
#: What one token of the ``treebank`` pre-tokenizer is, tried in this order inside each whitespace-separated chunk
#: (the normalizer has already written "1,000" as "1 @,@ 000", see `TREEBANK_NORMALIZER_RULES`).
TREEBANK_TOKEN_PATTERN = "|".join([
    r"@[-,.]@",  # WikiText's number and hyphen markers
    r"(?:https?://|www\.)[^\s\"<>]*[^\s\"<>.,;:!?)\]}'’]",  # URLs, without trailing punctuation
    r"(?:\p{L}\.){2,}",  # U.S., e.g., p.m., L.A.M.B.
    r"(?<![" + _W + r"])(?:" + "|".join(TREEBANK_ABBREVIATIONS) + r")\.(?![" + _W + r"])",  # Dr. St. No.
    r"(?<![" + _W + r"])\p{Lu}\.(?=$)",  # an initial at the end of a chunk: "J." of "J. R. R. Tolkien"
    r"['’][" + _W + r"]+",  # 's 't 're 'Brien: an apostrophe inside a word starts a new one
    r"[" + _W + r"]+(?:\.[" + _W + r"]+)*",  # words, numbers, About.com
    r"\.{2,}|-{2,}",  # ... and --
    r"[^\s" + _W + r"]",  # any other mark, one at a time
])
#: Normalizer rules of the ``treebank`` pre-tokenizer (pattern, replacement): WikiText's number and hyphen markers.
TREEBANK_NORMALIZER_RULES = (
    (r"(?<=\p{N}),(?=\p{N})", " @,@ "),
    (r"(?<=\p{N})\.(?=\p{N})", " @.@ "),
    (r"(?<=[" + _W + r"])-(?=[" + _W + r"])", " @-@ "),
)


#: Settings for already-tokenized corpora (PTB, WikiText, the user's own files by default).
PRETOKENIZED_SETTINGS = {"vocab_size": None, "min_frequency": 1, "lowercase": False, "nfkc": False,
                         "pre_tokenizer": "whitespace"}


def build_word_tokenizer(
    vocab: Optional[dict] = None, *, lowercase: bool = False, nfkc: bool = False, pre_tokenizer: str = "whitespace"
) -> Tokenizer:
    """Assemble the raw `tokenizers.Tokenizer` from its components (untrained when ``vocab`` is None).

    Args:
        vocab (`dict[str, int]`, *optional*): word -> id; must hold the special tokens at ids 0, 1, 2.
        lowercase (`bool`): add a lowercasing normalizer.
        nfkc (`bool`): add an NFKC normalizer (before lowercasing).
        pre_tokenizer (`str`): ``"whitespace"``, ``"words"`` or ``"treebank"`` (see the module docstring).
    Returns:
        `tokenizers.Tokenizer`.
    Raises:
        ValueError: unknown ``pre_tokenizer``.
    """
    if pre_tokenizer not in PRE_TOKENIZERS:
        raise UserError(
            f"pre_tokenizer={pre_tokenizer!r} is not supported; use one of {list(PRE_TOKENIZERS)} "
            "('whitespace' for already tokenized text, 'treebank' for raw text tokenized like WikiText, 'words' to "
            "split punctuation runs off words)."
        )
    tok = Tokenizer(models.WordLevel(vocab=vocab or {}, unk_token=UNK_TOKEN))
    steps = ([normalizers.NFKC()] if nfkc else []) + ([normalizers.Lowercase()] if lowercase else [])
    if pre_tokenizer == "treebank":
        steps += [normalizers.Replace(Regex(pattern), content) for pattern, content in TREEBANK_NORMALIZER_RULES]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = _pre_tokenizer(pre_tokenizer)
    # A space before every word, the first included (as GPT-2's "Ġ" tokens carry their space): the
    # text-generation pipeline returns prompt + decode(new tokens), which only reads right if the
    # decoded continuation starts with its space. Decoding a whole text therefore starts with " ";
    # `.strip()` it where that matters.
    tok.decoder = decoders.Replace(Regex("^"), " ")
    return tok


def _pre_tokenizer(name: str) -> pre_tokenizers.PreTokenizer:
    # WhitespaceSplit splits on the Unicode White_Space property (tab, CR, NBSP, U+3000, ...), so
    # those behave like ordinary spaces; Whitespace is the regex \w+|[^\w\s]+.
    if name == "whitespace":
        return pre_tokenizers.WhitespaceSplit()
    if name == "words":
        return pre_tokenizers.Whitespace()
    # treebank: whitespace first (the same Unicode whitespace as above), then the token pattern inside each
    # chunk; invert=True keeps the matches and removes the rest, and the last alternative of the pattern
    # matches any non-space character, so nothing is dropped.
    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(TREEBANK_TOKEN_PATTERN), behavior="removed", invert=True),
    ])


def wrap_tokenizer(tok: Tokenizer) -> TokenizersBackend:
    """Wrap a raw word-level `tokenizers.Tokenizer` as the transformers tokenizer class.

    ``<eos>`` and ``<pad>`` are special tokens. ``<unk>`` is an ordinary vocabulary entry (id 0, still matched whole
    in text): the WordLevel model emits it for every unknown word, and it is a word of the text the model reads and
    writes (PTB's rare-word marker). Were it special, ``decode(..., skip_special_tokens=True)`` (the
    text-generation pipeline's default) would delete unknown words from what a user reads, with no mark. transformers
    re-marks every *named* special token as special when it loads a tokenizer, so the wrapper names no
    ``unk_token`` (``tokenizer.unk_token`` is None); `unk_token_id` gives the id for either form.

    Args:
        tok (`tokenizers.Tokenizer`): built by `build_word_tokenizer`, vocabulary filled.
    Returns:
        `transformers.TokenizersBackend` with ``eos_token``, ``pad_token`` set and
        ``clean_up_tokenization_spaces=False`` (the clean-up would glue "a , b" into "a, b").
    """
    tok.add_tokens([AddedToken(UNK_TOKEN, special=False, normalized=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t != UNK_TOKEN])
    return TokenizersBackend(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def unk_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The id unknown words map to: ``tokenizer.unk_token_id``, or the ``<unk>`` entry of hwlm's word-level
    vocabulary (an ordinary entry since hwlm stopped naming it special; see `wrap_tokenizer`)."""
    if tokenizer.unk_token_id is not None:
        return tokenizer.unk_token_id
    return tokenizer.get_vocab().get(UNK_TOKEN)


def train_word_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: Optional[int] = None,
    min_frequency: int = 1,
    lowercase: bool = False,
    nfkc: bool = False,
    pre_tokenizer: str = "whitespace",
    show_progress: bool = False,
) -> TokenizersBackend:
    """Train a word-level tokenizer on a stream of lines: the vocabulary ``tokenizers``' WordLevelTrainer would
    build, counted with Arrow compute (see `count_words`; a test checks both give the same tokenizer).

    Args:
        texts (`Iterable`): lines (`str`), or batches of lines (`list[str]` or `pyarrow` string arrays),
            consumed once and streamed; a `datasets` column iterator or an open text file both work.
        vocab_size (`int`, *optional*): cap on the vocabulary, counting the 3 special tokens; the
            most frequent words are kept. ``None``: no cap.
        min_frequency (`int`): drop words seen fewer times.
        lowercase, nfkc, pre_tokenizer: see `build_word_tokenizer`.
        show_progress (`bool`): accepted for compatibility; counting is a few seconds even at 100M words.
    Returns:
        `transformers.TokenizersBackend`: ``<unk>``=0, ``<eos>``=1, ``<pad>``=2, then words by
        decreasing frequency (ties by the trainer's order, which is deterministic).
    Raises:
        ValueError: ``vocab_size`` smaller than 4 (the 3 special tokens plus one word),
            ``min_frequency`` < 1, or no words at all in ``texts``.
    """
    if vocab_size is not None and vocab_size < len(SPECIAL_TOKENS) + 1:
        raise UserError(
            f"vocab_size={vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens "
            f"{list(SPECIAL_TOKENS)} plus one word; use --vocab_size {len(SPECIAL_TOKENS) + 1} or more "
            "(or leave it unset for no cap)."
        )
    if min_frequency < 1:
        raise UserError(f"min_frequency={min_frequency} must be >= 1.")
    tok = build_word_tokenizer(lowercase=lowercase, nfkc=nfkc, pre_tokenizer=pre_tokenizer)
    return tokenizer_from_counts(*count_words(texts, tok), vocab_size=vocab_size, min_frequency=min_frequency,
                                 lowercase=lowercase, nfkc=nfkc, pre_tokenizer=pre_tokenizer)


def tokenizer_from_counts(
    words: pa.Array,
    counts: np.ndarray,
    *,
    vocab_size: Optional[int] = None,
    min_frequency: int = 1,
    lowercase: bool = False,
    nfkc: bool = False,
    pre_tokenizer: str = "whitespace",
) -> TokenizersBackend:
    """The tokenizer `train_word_tokenizer` builds from word counts (`count_words`, or `hwlm.data.CountingEncoder`).

    Raises:
        ValueError: no word left (empty corpus, or every word below ``min_frequency``).
    """
    words = vocabulary_from_counts(words, counts, vocab_size=vocab_size, min_frequency=min_frequency)
    if not words:
        raise UserError(
            "the training text has no words (empty corpus, or every word below "
            f"min_frequency={min_frequency}); check the input files or lower --min_frequency."
        )
    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + words)}
    return wrap_tokenizer(
        build_word_tokenizer(vocab, lowercase=lowercase, nfkc=nfkc, pre_tokenizer=pre_tokenizer)
    )


#: pyarrow's ``utf8_split_whitespace`` also splits on U+001C..U+001F, which Rust's ``char::is_whitespace`` (the
#: tokenizers' WhitespaceSplit) does not; every other whitespace character is the same for both (checked over all
#: code points by a test). Lines holding one of these four take the tokenizers path.
ARROW_ONLY_WHITESPACE = "[\x1c-\x1f]"
#: Unicode's White_Space characters outside ASCII (Rust's ``char::is_whitespace``). Text without these and without
#: `ARROW_ONLY_WHITESPACE` splits the same with Arrow's ASCII whitespace split, which is a third faster.
NON_ASCII_WHITESPACE = "\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_UNUSUAL_WHITESPACE = f"[\x1c-\x1f{NON_ASCII_WHITESPACE}]"
_SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


def holds_special_token(chunk: str) -> bool:
    """True when a whitespace-separated chunk of text holds a special token (``<unk>``, ``<eos>``, ``<pad>``), which
    the tokenizer cuts out whole before its pre-tokenizer (so the chunk is not one plain word)."""
    return _SPECIAL_PATTERN.search(chunk) is not None


def split_by_special_tokens(chunks: pa.Array) -> pa.BooleanArray:
    """Per chunk, `holds_special_token` and is not one itself: the chunks the tokenizer splits around a special
    token (Arrow compute over the whole array)."""
    holds = pc.match_substring_regex(chunks, _SPECIAL_PATTERN.pattern)
    return pc.and_(holds, pc.invert(pc.is_in(chunks, pa.array(SPECIAL_TOKENS, chunks.type))))


def arrow_batches(texts: Iterable, batch_size: int = 10_000) -> Iterator[pa.Array]:
    """Group a stream of lines (or batches of lines, or Arrow arrays) into Arrow string arrays, nulls as "".

    Args:
        texts (`Iterable`): `str` lines, `list[str]` batches, or `pyarrow.Array` / `ChunkedArray` of strings.
        batch_size (`int`): lines per array built from `str` lines.
    Yields:
        `pyarrow.Array` of (large_)strings.
    """
    batch: list[str] = []
    for item in texts:
        if isinstance(item, str):
            batch.append(item)
            if len(batch) >= batch_size:
                yield pa.array(batch, pa.large_string())
                batch = []
            continue
        if batch:
            yield pa.array(batch, pa.large_string())
            batch = []
        if isinstance(item, pa.ChunkedArray):
            if item.num_chunks and item.nbytes < 1 << 30:  # one array: datasets' tables hold ~1,000-line chunks
                yield pc.fill_null(item.combine_chunks(), "")
            else:
                yield from (pc.fill_null(c, "") for c in item.chunks)
        elif isinstance(item, pa.Array):
            yield pc.fill_null(item, "")
        else:
            yield pa.array([t if t is not None else "" for t in item], pa.large_string())
    if batch:
        yield pa.array(batch, pa.large_string())


def has_unusual_whitespace(lines: pa.Array) -> bool:
    """Whether any line holds whitespace other than the six ASCII characters (``" \\t\\n\\v\\f\\r"``)."""
    return bool(pc.any(pc.match_substring_regex(lines, _UNUSUAL_WHITESPACE)).as_py())


def split_whitespace(lines: pa.Array, *, ascii_only: bool = False) -> pa.ListArray:
    """``pyarrow.compute.utf8_split_whitespace`` after trimming each line (``ascii_only``: the ASCII split, for lines
    `has_unusual_whitespace` found plain).

    The trim works around a pyarrow 26 bug: on an array sliced out of a larger buffer (what datasets hands out),
    the last string's trailing whitespace can stay on its last chunk ("change " instead of "change").
    Empty strings remain where lines are empty; callers drop them.
    """
    if ascii_only:
        return pc.ascii_split_whitespace(pc.ascii_trim_whitespace(lines))
    return pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))


def split_odd_whitespace(lines: pa.Array) -> tuple[pa.ListArray, list[str]]:
    """The lines split on whitespace, except those holding `ARROW_ONLY_WHITESPACE`, returned as `str` (the
    tokenizers pipeline splits them); one regex pass decides, and plain batches take the faster ASCII split."""
    if not has_unusual_whitespace(lines):
        return split_whitespace(lines, ascii_only=True), []
    odd = pc.match_substring_regex(lines, ARROW_ONLY_WHITESPACE)
    if not pc.any(odd).as_py():
        return split_whitespace(lines), []
    return split_whitespace(pc.filter(lines, pc.invert(odd))), pc.filter(lines, odd).to_pylist()


def pipeline_words(text: str, tokenizer: Tokenizer) -> list[str]:
    """The words a tokenizer's pipeline makes of a text (special tokens cut out first, then normalizer and
    pre-tokenizer), which is what the WordLevel model then looks up and what its trainer counts."""
    words: list[str] = []
    for piece in _SPECIAL_PATTERN.split(text):
        if piece in SPECIAL_TOKENS:
            words.append(piece)
        elif piece:
            normalized = tokenizer.normalizer.normalize_str(piece) if tokenizer.normalizer is not None else piece
            words += [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
    return words


def is_whitespace_only(tokenizer: Tokenizer) -> bool:
    """True when the pipeline is a plain whitespace split (no normalizer): every chunk between spaces is one word."""
    return tokenizer.normalizer is None and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.WhitespaceSplit)


def _sum_counts(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables([t.cast(pa.schema([("word", pa.large_string()), ("n", pa.int64())])) for t in tables])
    return table.group_by("word").aggregate([("n", "sum")]).rename_columns(["word", "n"])


def count_words(texts: Iterable, tokenizer: Tokenizer) -> tuple[pa.Array, np.ndarray]:
    """Count the words of a corpus as ``tokenizer``'s pipeline splits them, vectorized with Arrow compute.

    Lines are split on whitespace and the chunks counted with ``pyarrow.compute`` (C++); only the distinct
    chunks that the pipeline may change (any chunk when there is a normalizer or a splitting pre-tokenizer;
    otherwise only chunks holding a special token) go through the ``tokenizers`` pipeline, once each. This is
    exact because every hwlm pre-tokenizer splits on whitespace first and never joins across it.

    Args:
        texts (`Iterable`): see `arrow_batches`.
        tokenizer (`tokenizers.Tokenizer`): normalizer and pre-tokenizer to apply (the vocabulary is not used).
    Returns:
        ``(words, counts)``: a `pyarrow` string array of distinct words and an int64 `numpy` array of counts.
    """
    tables, odd_lines = [], []
    for lines in arrow_batches(texts):
        parts, odd = split_odd_whitespace(lines)
        odd_lines += odd
        counted = pc.value_counts(parts.flatten())
        tables.append(pa.table({"word": counted.field("values"), "n": counted.field("counts")}))
        if len(tables) >= 32:  # keep memory at the distinct words, not the number of batches
            tables = [_sum_counts(tables)]
    chunks = _sum_counts(tables) if tables else pa.table({"word": pa.array([], pa.large_string()), "n": pa.array([], pa.int64())})
    return words_from_chunk_counts(chunks, odd_lines, tokenizer)


def words_from_chunk_counts(chunks: pa.Table, odd_lines: list[str], tokenizer: Tokenizer) -> tuple[pa.Array, np.ndarray]:
    """Word counts from whitespace-chunk counts: the chunks the pipeline may change go through it, once each.

    Args:
        chunks (`pyarrow.Table`): columns ``word`` (distinct whitespace-separated chunks, ``""`` allowed) and ``n``.
        odd_lines (`list[str]`): lines holding `ARROW_ONLY_WHITESPACE`, counted through the pipeline whole.
        tokenizer (`tokenizers.Tokenizer`): normalizer and pre-tokenizer to apply.
    Returns:
        ``(words, counts)`` as `count_words`.
    """
    # utf8_split_whitespace leaves empty strings at leading/trailing/repeated whitespace: not words
    chunks = chunks.filter(pc.greater(pc.binary_length(chunks["word"]), 0))
    if is_whitespace_only(tokenizer):
        changes = split_by_special_tokens(chunks["word"])
    else:
        changes = pa.array(np.ones(chunks.num_rows, dtype=bool))
    kept = chunks.filter(pc.invert(changes))
    extra: dict[str, int] = {}
    for chunk, n in zip(chunks.filter(changes)["word"].to_pylist(), chunks.filter(changes)["n"].to_pylist()):
        for word in pipeline_words(chunk, tokenizer):
            extra[word] = extra.get(word, 0) + n
    for line in odd_lines:
        for word in pipeline_words(line, tokenizer):
            extra[word] = extra.get(word, 0) + 1
    if extra:
        kept = _sum_counts([kept, pa.table({"word": pa.array(list(extra), pa.large_string()),
                                            "n": pa.array(list(extra.values()), pa.int64())})])
    return kept["word"].combine_chunks(), kept["n"].to_numpy()


def vocabulary_from_counts(
    words: pa.Array, counts: np.ndarray, *, vocab_size: Optional[int] = None, min_frequency: int = 1
) -> list[str]:
    """The words of the vocabulary in id order (after the special tokens), as ``tokenizers``' WordLevelTrainer
    picks them: by decreasing count, ties by the word's code points, at least ``min_frequency``, capped.

    Args:
        words (`pyarrow.Array` of str), counts (`numpy.ndarray` of int): from `count_words`.
        vocab_size (`int`, *optional*): cap counting the special tokens. min_frequency (`int`).
    Returns:
        `list[str]`, special tokens excluded.
    """
    table = pa.table({"word": words, "n": pa.array(counts, pa.int64())}).filter(pc.greater_equal(pc.field("n"), min_frequency))
    # Arrow sorts strings by their UTF-8 bytes, which is code point order: Rust's String order, the trainer's tie-break
    ordered = table.sort_by([("n", "descending"), ("word", "ascending")])["word"].to_pylist()
    if vocab_size is not None:
        # the trainer takes cap + 3 entries from [specials] + ordered (a corpus "<unk>" takes a place), then
        # train_word_tokenizer keeps cap - 3 words
        ordered = ordered[:vocab_size]
    ordered = [w for w in ordered if w not in SPECIAL_TOKENS]
    return ordered[: vocab_size - len(SPECIAL_TOKENS)] if vocab_size is not None else ordered


def tokenizer_fingerprint(tokenizer: Union[PreTrainedTokenizerBase, Tokenizer]) -> str:
    """Stable hash of what decides the token ids: vocabulary, special tokens, normalizer, pre-tokenizer.

    Args:
        tokenizer: a transformers tokenizer with a ``backend_tokenizer``, or a `tokenizers.Tokenizer`.
    Returns:
        `str`: 16 hex digits; equal for tokenizers that map every text to the same ids.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    state = json.loads(backend.to_str())
    relevant = {
        "model": state.get("model"),
        "normalizer": state.get("normalizer"),
        "pre_tokenizer": state.get("pre_tokenizer"),
        "added_tokens": [{k: t[k] for k in ("id", "content", "special")} for t in state.get("added_tokens", [])],
    }
    blob = json.dumps(relevant, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_tokenizer(name_or_path: Union[str, Path]) -> PreTrainedTokenizerBase:
    """Load a tokenizer folder (or Hub name) with `AutoTokenizer` and check it has ``<eos>``.

    Args:
        name_or_path (`str` or `Path`): a folder written by ``save_pretrained`` (e.g. ``tokenizer/``).
    Returns:
        the transformers tokenizer.
    Raises:
        FileNotFoundError: the folder does not exist or holds no tokenizer.
        ValueError: the tokenizer has no ``eos_token`` (the line convention needs one).
    """
    path = Path(name_or_path)
    if path.exists() and not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise FileNotFoundError(
            f"tokenizer folder {str(path)!r} holds no tokenizer.json; build one with hwlm-tokenizer "
            "--output_dir <folder> or pass another --tokenizer_name."
        )
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"could not load tokenizer {str(name_or_path)!r} ({type(e).__name__}: {e}); pass a folder written "
            "by hwlm-tokenizer or save_pretrained."
        ) from e
    if tok.eos_token_id is None:
        raise UserError(
            f"tokenizer {str(name_or_path)!r} has no eos_token; hwlm appends one <eos> per line. "
            "Build a tokenizer with hwlm-tokenizer."
        )
    return tok


def fit_tokenizer_to_model(tokenizer: PreTrainedTokenizerBase, config) -> PreTrainedTokenizerBase:
    """
    A copy of ``tokenizer`` that knows the model's context: for a model with ``max_position_embeddings`` (the
    Transformer), ``model_max_length`` is that context and truncation keeps the most recent tokens (the left side
    is cut), so ``truncation=True`` and pipelines never hand the model more than it can read. Recurrent models and
    Transformers with segment memory have no context limit; their tokenizer is returned unchanged.
    """
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None or getattr(config, "memory_length", None) is not None:  # segment memory: any length
        return tokenizer
    fitted = copy.deepcopy(tokenizer)
    settings = {"model_max_length": int(limit), "truncation_side": "left"}
    for name, value in settings.items():
        setattr(fitted, name, value)
    fitted.init_kwargs.update(settings)  # what save_pretrained writes to tokenizer_config.json
    return fitted


def treebank_words(text: str, tokenizer: Optional[Tokenizer] = None) -> list[str]:
    """The words the ``treebank`` pipeline (normalizer + pre-tokenizer) makes of a text, before the vocabulary.

    Args:
        text (`str`): raw text.
        tokenizer (`tokenizers.Tokenizer`, *optional*): a tokenizer built with ``pre_tokenizer="treebank"``
            (default: a new one without lowercasing or NFKC).
    Returns:
        `list[str]`, e.g. ``"O'Brien wasn't."`` -> ``["O", "'Brien", "wasn", "'t", "."]``.
    """
    tok = tokenizer or build_word_tokenizer(pre_tokenizer="treebank")
    normalized = tok.normalizer.normalize_str(text) if tok.normalizer is not None else text
    return [word for word, _ in tok.pre_tokenizer.pre_tokenize_str(normalized)]


_DETOKENIZE_RULES = [
    (re.compile(r" @([-,.])@ "), r"\1"),  # 1 @,@ 000 -> 1,000; well @-@ known -> well-known
    (re.compile(r" (['’][\w])"), r"\1"),  # wasn 't -> wasn't, O 'Brien -> O'Brien
    (re.compile(r"(\ws) (['’])(?= |$)"), r"\1\2"),  # nations ' -> nations'
    (re.compile(r" ([.,;:!?%)\]}]|\.{2,})(?= |$)"), r"\1"),  # closing punctuation attaches left
    (re.compile(r"(^| )([(\[{$]) "), r"\1\2"),  # opening brackets and currency attach right
]


def detokenize_wikitext(line: str) -> str:
    """Write a line of tokenized WikiText as ordinary English text (the inverse of the ``treebank`` tokenizer).

    Joins ``@-@``, ``@,@`` and ``@.@``; attaches apostrophe words ('s, 't, 'Brien), closing punctuation,
    brackets, currency signs, and double quotes (alternately opening and closing) to their words.

    Args:
        line (`str`): one line of ``wiki.*.tokens`` / ``wiki.*.raw``, e.g. ``' the U.S. , $ 1 @,@ 000 " x " '``.
    Returns:
        `str`, e.g. ``'the U.S., $1,000 "x"'``; whitespace at both ends removed.
    """
    text = " ".join(line.split())
    for pattern, replacement in _DETOKENIZE_RULES:
        text = pattern.sub(replacement, text)
    out, opening = [], True
    for part in re.split(r'( ?" ?)', text):  # each double quote with its surrounding spaces
        if part.strip() == '"':
            out.append(('"' if not out or out[-1].endswith(" ") else ' "') if opening else '" ')
            if not opening and part.endswith(" ") is False:
                out[-1] = '"'
            opening = not opening
        else:
            out.append(part)
    return "".join(out).strip()


def round_trip_agreement(lines: Iterable[str]) -> tuple[int, int]:
    """How many non-empty lines of tokenized WikiText survive detokenize -> ``treebank`` re-tokenize unchanged.

    ``<unk>`` (the tokenized release's rare-word marker) is replaced by a placeholder word first, since a raw
    text would hold a real word there.

    Args:
        lines (`Iterable[str]`): lines of ``wiki.*.tokens`` (or the ``.raw`` release).
    Returns:
        ``(lines, agreeing)``: non-empty lines, and those whose words come back exactly.
    """
    tok = build_word_tokenizer(pre_tokenizer="treebank")
    total = agreeing = 0
    for line in lines:
        if not line.strip():
            continue
        line = line.replace(UNK_TOKEN, "UNKWORD")
        total += 1
        agreeing += treebank_words(detokenize_wikitext(line), tok) == line.split()
    return total, agreeing
