"""The settings dataclasses the commands parse, beside the run settings of `hwlm.training.arguments`.

Standard library only, on purpose: ``hwlm-<command> --help`` and a settings error (each dataclass checks itself in
``__post_init__``) must answer before torch, transformers or datasets are imported. The modules that use these
settings re-export them (``hwlm.data.DataArguments``, ``hwlm.tokenization.TokenizerArguments``,
``hwlm.evaluation.DynamicEvalSettings`` / ``NeuralCacheSettings``, ``hwlm.cli.evaluate.EvalArguments``), so either
import path works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hwlm.errors import UserError

__all__ = ["PRE_TOKENIZERS", "DataArguments", "TokenizerArguments", "DynamicEvalSettings", "NeuralCacheSettings",
           "EvalArguments", "parse_grid"]

#: The pre-tokenizers of `hwlm.tokenization.build_word_tokenizer`.
PRE_TOKENIZERS = ("whitespace", "words", "treebank")


@dataclass
class DataArguments:
    """Where the text comes from and how it becomes model inputs.

    Shared by ``hwlm-prepare``, ``hwlm-tokenizer`` and the training command (parsed by
    `hwlm.cli.common.parse_command`). With neither ``dataset_name`` nor ``train_file``, the
    embedded corpus (Python's reference-manual topics, ``pydoc_data.topics``) is used.
    """

    dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "A classic corpus by name: ptb, wikitext-2, wikitext-103, wikitext-2-raw, wikitext-103-raw "
                  "(local copies from $HWLM_DATA_DIR/<name>/, else downloaded once into the datasets cache; "
                  "--train_file etc. override it), or any Hub dataset id, e.g. Salesforce/wikitext. "
                  "Default: the embedded corpus."},
    )
    dataset_config_name: Optional[str] = field(
        default=None, metadata={"help": "Hub dataset configuration, e.g. wikitext-2-v1."}
    )
    train_file: Optional[str] = field(
        default=None,
        metadata={"help": "Local training file: text (one line per row; .txt, .tokens, ...), .json/.jsonl, "
                  ".csv or .parquet."},
    )
    validation_file: Optional[str] = field(
        default=None,
        metadata={"help": "Local validation file (same format as --train_file). Default: the last "
                  "--validation_split_percentage percent of the training lines."},
    )
    test_file: Optional[str] = field(
        default=None,
        metadata={"help": "Local test file (same format as --train_file). Default: carved off the end of the "
                  "training lines like the validation split."},
    )
    text_column: str = field(
        default="text", metadata={"help": "Column holding the text in json/csv/parquet files and Hub datasets."}
    )
    tokenizer_name: Optional[str] = field(
        default=None,
        metadata={"help": "Tokenizer folder (written by hwlm-tokenizer or save_pretrained). Default: the "
                  "repository's tokenizer/ for the embedded corpus; otherwise a word-level tokenizer is "
                  "trained on the training split (flags of hwlm-tokenizer)."},
    )
    block_size: int = field(
        default=128, metadata={"help": "Tokens per row of the 'blocks' layout (Transformer training)."}
    )
    preprocessing_num_workers: Optional[int] = field(
        default=None, metadata={"help": "Processes for tokenisation (Dataset.map num_proc). Default: one."}
    )
    overwrite_cache: bool = field(
        default=False, metadata={"help": "Recompute the tokenisation instead of reusing the datasets cache."}
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Percent of the training lines (taken from the end) used as validation and as test "
                  "split when the data has none."},
    )
    replace_invalid_utf8: bool = field(
        default=False,
        metadata={"help": "Replace bytes that are not UTF-8 with U+FFFD instead of stopping with an error."},
    )

    def __post_init__(self):
        # checked here, before any file is read, so a typo answers at once (and the same on every process)
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise UserError(f"block_size={self.block_size!r} must be >= 1 (--block_size: tokens per row of the "
                             "blocks layout)")
        if not 0 < self.validation_split_percentage < 50:
            raise UserError(f"validation_split_percentage={self.validation_split_percentage!r} must be in 1..49 "
                             "(percent of the training lines carved off for each missing split).")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise UserError(f"--preprocessing_num_workers must be >= 1 (or unset for one process), got "
                             f"{self.preprocessing_num_workers}")


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
                  "WikiText); 'treebank' tokenizes raw text the way WikiText is (wasn 't, 1 @,@ 000, U.S.); "
                  "'words' splits runs of punctuation off words. Default: whitespace (raw named corpora "
                  "wikitext-*-raw: treebank; embedded corpus: words).",
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


@dataclass
class DynamicEvalSettings:
    """Dynamic evaluation hyperparameters; the defaults are those of Krause et al.'s code for AWD-LSTM on PTB."""

    dynamic_eval_learning_rate: float = field(
        default=5e-5, metadata={"help": "η, the step size of the RMS-normalised update (0 = plain evaluation)."}
    )
    dynamic_eval_decay_rate: float = field(
        default=2e-3,
        metadata={"help": "λ, the decay towards the trained weights, scaled per weight by RMS/mean(RMS)."},
    )
    dynamic_eval_epsilon: float = field(default=2e-5, metadata={"help": "ε in g / (RMS + ε)."})
    dynamic_eval_segment_length: int = field(
        default=5,
        metadata={"help": "Tokens scored between two updates: the stream window (recurrent models) or the "
                  "sliding-window stride (Transformer)."},
    )
    dynamic_eval_stats_batch_size: int = field(
        default=100, metadata={"help": "Streams (or windows) per batch for the training-split gradient RMS."}
    )
    dynamic_eval_stats_max_batches: Optional[int] = field(
        default=None, metadata={"help": "Cap on the batches of the gradient RMS (default: the whole training split)."}
    )

    def __post_init__(self):
        checks = [
            ("dynamic_eval_learning_rate", self.dynamic_eval_learning_rate >= 0, ">= 0"),
            ("dynamic_eval_decay_rate", 0 <= self.dynamic_eval_decay_rate <= 1, "in [0, 1]"),
            ("dynamic_eval_epsilon", self.dynamic_eval_epsilon > 0, "> 0"),
            ("dynamic_eval_segment_length", self.dynamic_eval_segment_length >= 1, ">= 1"),
            ("dynamic_eval_stats_batch_size", self.dynamic_eval_stats_batch_size >= 1, ">= 1"),
            ("dynamic_eval_stats_max_batches",
             self.dynamic_eval_stats_max_batches is None or self.dynamic_eval_stats_max_batches >= 1, ">= 1 or unset"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise UserError(f"--{name} must be {allowed}, got {getattr(self, name)}")


@dataclass
class NeuralCacheSettings:
    """Neural cache hyperparameters; the defaults are AWD-LSTM's PTB settings (salesforce/awd-lstm-lm pointer.py)."""

    cache_size: int = field(default=500, metadata={"help": "Number of recent (hidden state, next word) pairs kept."})
    cache_theta: float = field(default=1.0, metadata={"help": "θ, the inverse temperature of the cache scores."})
    cache_lambda: float = field(default=0.1, metadata={"help": "λ, the weight of the cache in the mixture (0 = off)."})

    def __post_init__(self):
        if self.cache_size < 1:
            raise UserError(f"--cache_size must be >= 1, got {self.cache_size}")
        if self.cache_theta < 0:
            raise UserError(f"--cache_theta must be >= 0, got {self.cache_theta}")
        if not 0 <= self.cache_lambda < 1:
            raise UserError(
                f"--cache_lambda must be in [0, 1), got {self.cache_lambda} (1 would give a word never seen in the "
                "cache probability 0)"
            )


def parse_grid(text: Optional[str]) -> list[float]:
    """'1e-5, 3e-5' -> [1e-5, 3e-5]; None or '' -> []."""
    return [float(v) for v in (text or "").split(",") if v.strip()]


@dataclass
class EvalArguments:
    """What to evaluate and how (see `hwlm.evaluation` for the methods)."""

    model_name_or_path: str = field(metadata={"help": "A folder written by hwlm-train (or save_pretrained)."})
    prepared_data_dir: Optional[str] = field(
        default=None, metadata={"help": "A folder from hwlm-prepare; without it the data flags are prepared now."}
    )
    splits: str = field(default="validation,test", metadata={"help": "Comma-separated splits to score."})
    per_device_eval_batch_size: int = field(
        default=1,
        metadata={"help": "Parallel streams per process (state-carrying models; 1 = the literature's figure) "
                  "or windows per forward (sliding window)."},
    )
    bptt: int = field(default=100, metadata={"help": "Window length for streamed evaluation (speed only)."})
    eval_window: Optional[int] = field(
        default=None, metadata={"help": "Sliding window length; default max_position_embeddings."}
    )
    eval_stride: Optional[int] = field(default=None, metadata={"help": "Sliding window stride; default window // 2."})
    eval_protocol: str = field(
        default="auto",
        metadata={"help": "How a split is read (hwlm.evaluation.perplexity): 'auto' (stream for state-carrying models, sliding "
                  "window otherwise), 'stream', 'sliding_window', or 'chunks' (pytorch/examples' evaluation: "
                  "--per_device_eval_batch_size streams in disjoint chunks of --eval_window tokens, default --bptt, "
                  "nothing carried), to score two models under one protocol.",
                  "choices": ["auto", "stream", "sliding_window", "chunks"]},
    )
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the results as JSON here."})
    update_model_card: bool = field(
        default=False,
        metadata={"help": "Render the folder's model card (README.md of an hwlm-train folder) again with these "
                  "figures: plain and, with --dynamic_eval / --neural_cache, adapted perplexities as separate metrics."},
    )
    dynamic_eval: bool = field(
        default=False,
        metadata={"help": "Also score with dynamic evaluation (Krause et al. 2018); see --dynamic_eval_*."},
    )
    neural_cache: bool = field(
        default=False, metadata={"help": "Also score with the neural cache (Grave et al. 2017); see --cache_*."}
    )
    tune_on: Optional[str] = field(
        default=None,
        metadata={"help": "'validation': pick the dynamic-evaluation learning rate (and decay rate) and the cache's "
                  "theta/lambda by grid search on the validation split, then score the splits once with them.",
                  "choices": ["validation"]},
    )
    tune_max_tokens: Optional[int] = field(
        default=None, metadata={"help": "Tune on the first N validation tokens only (faster; default all)."}
    )
    dynamic_eval_learning_rate_grid: str = field(
        default="1e-5,3e-5,1e-4,3e-4,1e-3", metadata={"help": "Learning rates tried by --tune_on."}
    )
    dynamic_eval_decay_rate_grid: Optional[str] = field(
        default=None, metadata={"help": "Decay rates tried by --tune_on (default: --dynamic_eval_decay_rate only)."}
    )
    cache_theta_grid: str = field(default="0.1,0.2,0.3,0.5,0.7,1.0", metadata={"help": "Thetas tried by --tune_on."})
    cache_lambda_grid: str = field(
        default="0.05,0.1,0.15,0.2,0.25,0.3", metadata={"help": "Lambdas tried by --tune_on."}
    )

    def __post_init__(self):
        for name in ("per_device_eval_batch_size", "bptt", "eval_window", "eval_stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name} must be an integer >= 1, got {value}")
        if self.eval_protocol != "auto" and (self.dynamic_eval or self.neural_cache):
            raise UserError(f"--eval_protocol {self.eval_protocol} scores the plain model only; drop it to use "
                             "--dynamic_eval / --neural_cache, which read each split as the model's default protocol")
        if self.tune_on is not None and not (self.dynamic_eval or self.neural_cache):
            raise UserError("--tune_on tunes --dynamic_eval and/or --neural_cache; pass at least one of them")
        if self.tune_max_tokens is not None and self.tune_max_tokens < 2:
            raise UserError(f"--tune_max_tokens must be >= 2, got {self.tune_max_tokens}")
        for name in ("dynamic_eval_learning_rate_grid", "dynamic_eval_decay_rate_grid", "cache_theta_grid",
                     "cache_lambda_grid"):
            value = getattr(self, name)
            try:
                parse_grid(value)
            except ValueError:
                raise UserError(f"--{name} must be comma-separated numbers, got {value!r}") from None
