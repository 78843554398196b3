"""The word-level tokenizer: built from `tokenizers` components, wrapped for `AutoTokenizer`.

The pipeline, component by component::

    normalizer     optional NFKC, optional lowercasing
    pre-tokenizer  "whitespace": split on Unicode whitespace only (PTB, WikiText: already tokenized)
                   "words":      also split punctuation off words (raw text)
    model          WordLevel, unknown words -> <unk>
    decoder        writes a space before every word, so decoded words can be appended to any text

Special tokens come first and keep their ids whatever the corpus:
``<unk>`` = 0, ``<eos>`` = 1, ``<pad>`` = 2; words follow by decreasing frequency.

Encoding a prompt never appends ``<eos>``: the data pipeline (``hwlm.data``) appends one
``<eos>`` per corpus line itself (a post-processor would also hit prompts at generation time).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, TokenizersBackend

UNK_TOKEN = "<unk>"
EOS_TOKEN = "<eos>"
PAD_TOKEN = "<pad>"
#: Special tokens in id order: ``<unk>`` = 0, ``<eos>`` = 1, ``<pad>`` = 2.
SPECIAL_TOKENS = (UNK_TOKEN, EOS_TOKEN, PAD_TOKEN)
PRE_TOKENIZERS = ("whitespace", "words")


@dataclass
class TokenizerArguments:
    """How to train a word-level tokenizer (flags of ``hwlm-tokenizer`` and ``hwlm-prepare``).

    A field left at ``None`` takes the default of the corpus: for the embedded corpus (raw
    English text) the settings of the committed ``tokenizer/`` (see ``EMBEDDED_TOKENIZER_SETTINGS``
    in ``hwlm.data``); for any other corpus the settings for already-tokenized text:
    ``whitespace`` pre-tokenizer, no lowercasing, no NFKC, no cap, ``min_frequency`` 1, which
    reproduces the classic PTB / WikiText vocabularies exactly.
    """

    vocab_size: Optional[int] = field(
        default=None,
        metadata={"help": "Cap on the vocabulary size, counting the 3 special tokens (<unk>, <eos>, <pad>). "
                  "Default: no cap (embedded corpus: 10000)."},
    )
    min_frequency: Optional[int] = field(
        default=None,
        metadata={"help": "Keep only words seen at least this many times in the training split. "
                  "Default: 1 (embedded corpus: 2)."},
    )
    lowercase: Optional[bool] = field(
        default=None,
        metadata={"help": "Lowercase text before splitting. Default: false (embedded corpus: true).",
                  "nargs": "?", "const": True},
    )
    nfkc: Optional[bool] = field(
        default=None,
        metadata={"help": "Apply Unicode NFKC normalisation before splitting. Default: false (embedded corpus: true).",
                  "nargs": "?", "const": True},
    )
    pre_tokenizer: Optional[str] = field(
        default=None,
        metadata={"help": "'whitespace' splits on whitespace only (already tokenized corpora such as PTB, "
                  "WikiText); 'words' also splits punctuation off words (raw text). "
                  "Default: whitespace (embedded corpus: words).",
                  "choices": list(PRE_TOKENIZERS)},
    )

    def resolved(self, defaults: dict) -> dict:
        """Return the settings as keyword arguments for `train_word_tokenizer`.

        Args:
            defaults (`dict`): values for the fields left at ``None``.
        Returns:
            `dict` with keys ``vocab_size``, ``min_frequency``, ``lowercase``, ``nfkc``, ``pre_tokenizer``.
        """
        out = {}
        for name in ("vocab_size", "min_frequency", "lowercase", "nfkc", "pre_tokenizer"):
            value = getattr(self, name)
            out[name] = defaults.get(name) if value is None else value
        return out


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
        pre_tokenizer (`str`): ``"whitespace"`` or ``"words"`` (see the module docstring).
    Returns:
        `tokenizers.Tokenizer`.
    Raises:
        ValueError: unknown ``pre_tokenizer``.
    """
    if pre_tokenizer not in PRE_TOKENIZERS:
        raise ValueError(
            f"pre_tokenizer={pre_tokenizer!r} is not supported; use one of {list(PRE_TOKENIZERS)} "
            "('whitespace' for already tokenized text, 'words' for raw text)."
        )
    tok = Tokenizer(models.WordLevel(vocab=vocab or {}, unk_token=UNK_TOKEN))
    steps = ([normalizers.NFKC()] if nfkc else []) + ([normalizers.Lowercase()] if lowercase else [])
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    # WhitespaceSplit splits on the Unicode White_Space property (tab, CR, NBSP, U+3000, ...), so
    # those behave like ordinary spaces; Whitespace is the regex \w+|[^\w\s]+.
    tok.pre_tokenizer = (
        pre_tokenizers.WhitespaceSplit() if pre_tokenizer == "whitespace" else pre_tokenizers.Whitespace()
    )
    # A space before every word, the first included (as GPT-2's "Ġ" tokens carry their space): the
    # text-generation pipeline returns prompt + decode(new tokens), which only reads right if the
    # decoded continuation starts with its space. Decoding a whole text therefore starts with " ";
    # `.strip()` it where that matters.
    tok.decoder = decoders.Replace(Regex("^"), " ")
    return tok


def wrap_tokenizer(tok: Tokenizer) -> TokenizersBackend:
    """Wrap a raw word-level `tokenizers.Tokenizer` as the transformers tokenizer class.

    Args:
        tok (`tokenizers.Tokenizer`): built by `build_word_tokenizer`, vocabulary filled.
    Returns:
        `transformers.TokenizersBackend` with ``unk_token``, ``eos_token``, ``pad_token`` set and
        ``clean_up_tokenization_spaces=False`` (the clean-up would glue "a , b" into "a, b").
    """
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return TokenizersBackend(
        tokenizer_object=tok,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


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
    """Train a word-level tokenizer with ``train_from_iterator`` on a stream of lines.

    Args:
        texts (`Iterable[str]`): lines (or batches of lines as `list[str]`), consumed once and
            streamed; a `datasets` column iterator or an open text file both work.
        vocab_size (`int`, *optional*): cap on the vocabulary, counting the 3 special tokens; the
            most frequent words are kept. ``None``: no cap.
        min_frequency (`int`): drop words seen fewer times.
        lowercase, nfkc, pre_tokenizer: see `build_word_tokenizer`.
        show_progress (`bool`): show the trainer's progress bar.
    Returns:
        `transformers.TokenizersBackend`: ``<unk>``=0, ``<eos>``=1, ``<pad>``=2, then words by
        decreasing frequency (ties by the trainer's order, which is deterministic).
    Raises:
        ValueError: ``vocab_size`` smaller than 4 (the 3 special tokens plus one word),
            ``min_frequency`` < 1, or no words at all in ``texts``.
    """
    if vocab_size is not None and vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the {len(SPECIAL_TOKENS)} special tokens "
            f"{list(SPECIAL_TOKENS)} plus one word; use --vocab_size {len(SPECIAL_TOKENS) + 1} or more "
            "(or leave it unset for no cap)."
        )
    if min_frequency < 1:
        raise ValueError(f"min_frequency={min_frequency} must be >= 1.")
    tok = build_word_tokenizer(lowercase=lowercase, nfkc=nfkc, pre_tokenizer=pre_tokenizer)
    # Registered before training so that "<unk>" in the text stays one word even with the "words"
    # pre-tokenizer (added tokens are cut out before pre-tokenization, during training too).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    # The corpus may itself contain "<unk>" (PTB, WikiText) or even "<eos>": the trainer then counts
    # it as a word and gives it a second id, leaving a hole in the vocabulary. Leave room for that
    # (cap + 3) and renumber below so each special token exists once, at its fixed id.
    trainer = trainers.WordLevelTrainer(
        vocab_size=(vocab_size + len(SPECIAL_TOKENS)) if vocab_size is not None else 2**31 - 1,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=show_progress,
    )
    tok.train_from_iterator(_as_batches(texts), trainer=trainer)
    words = [w for w, _ in sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
             if w not in SPECIAL_TOKENS]
    if not words:
        raise ValueError(
            "the training text has no words (empty corpus, or every word below "
            f"min_frequency={min_frequency}); check the input files or lower --min_frequency."
        )
    if vocab_size is not None:
        words = words[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + words)}
    return wrap_tokenizer(
        build_word_tokenizer(vocab, lowercase=lowercase, nfkc=nfkc, pre_tokenizer=pre_tokenizer)
    )


def _as_batches(texts: Iterable, batch_size: int = 1000) -> Iterator[list[str]]:
    """Group a stream of lines (or pass through batches) into lists for the trainer."""
    batch: list[str] = []
    for item in texts:
        if isinstance(item, str):
            batch.append(item)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        else:
            yield list(item)
    if batch:
        yield batch


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
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"could not load tokenizer {str(name_or_path)!r} ({type(e).__name__}: {e}); pass a folder written "
            "by hwlm-tokenizer or save_pretrained."
        ) from e
    if tok.eos_token_id is None:
        raise ValueError(
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
