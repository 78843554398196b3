"""``hwlm-eval``: perplexity of a saved model folder on the validation and test splits.

Examples::

    hwlm-eval --model_name_or_path outputs/quickstart --prepared_data_dir outputs/quickstart-data
    hwlm-eval --model_name_or_path outputs/ptb --train_file ptb.train.txt --validation_file ptb.valid.txt \\
        --test_file ptb.test.txt --per_device_eval_batch_size 1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hwlm.cli.common import check_model_folder, parse_command, run_main
from hwlm.evaluation.run import parse_grid

PROG = "hwlm-eval"


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
                raise ValueError(f"--{name} must be an integer >= 1, got {value}")
        if self.eval_protocol != "auto" and (self.dynamic_eval or self.neural_cache):
            raise ValueError(f"--eval_protocol {self.eval_protocol} scores the plain model only; drop it to use "
                             "--dynamic_eval / --neural_cache, which read each split as the model's default protocol")
        if self.tune_on is not None and not (self.dynamic_eval or self.neural_cache):
            raise ValueError("--tune_on tunes --dynamic_eval and/or --neural_cache; pass at least one of them")
        if self.tune_max_tokens is not None and self.tune_max_tokens < 2:
            raise ValueError(f"--tune_max_tokens must be >= 2, got {self.tune_max_tokens}")
        for name in ("dynamic_eval_learning_rate_grid", "dynamic_eval_decay_rate_grid", "cache_theta_grid",
                     "cache_lambda_grid"):
            value = getattr(self, name)
            try:
                parse_grid(value)
            except ValueError:
                raise ValueError(f"--{name} must be comma-separated numbers, got {value!r}") from None



def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(EvalArguments, DataArguments, DynamicEvalSettings, NeuralCacheSettings)`` from the command line (flags, or a
    ``--config`` preset)."""
    from hwlm.evaluation.dynamic_eval import DynamicEvalSettings
    from hwlm.evaluation.neural_cache import NeuralCacheSettings
    from hwlm.data import DataArguments

    return parse_command(
        (EvalArguments, DataArguments, DynamicEvalSettings, NeuralCacheSettings), argv, prog=PROG, description=__doc__
    )


def run(argv: Optional[list[str]] = None) -> dict:
    """Parse the flags and score the splits; returns the results mapping."""
    eval_args, data_args, dynamic_args, cache_args = parse(argv)
    check_model_folder(eval_args.model_name_or_path)
    if eval_args.update_model_card:
        from hwlm.hub import check_card_folder

        check_card_folder(eval_args.model_name_or_path)  # before minutes of evaluation, not after
    from hwlm.evaluation.run import evaluate_folder

    return evaluate_folder(eval_args, data_args, dynamic_args, cache_args)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag, folder, data file or tokenizer is a one-line error, exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
