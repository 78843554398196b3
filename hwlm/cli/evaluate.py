"""``hwlm-eval``: perplexity of a saved model folder on the validation and test splits.

Examples::

    hwlm-eval --model_name_or_path outputs/quickstart --prepared_data_dir outputs/quickstart-data
    hwlm-eval --model_name_or_path outputs/ptb --train_file ptb.train.txt --validation_file ptb.valid.txt \\
        --test_file ptb.test.txt --per_device_eval_batch_size 1
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import check_model_folder, check_tokenizer_fits, parse_command, run_main

PROG = "hwlm-eval"


@dataclass
class EvalArguments:
    """What to evaluate and how (see ``hwlm/evaluation.py`` for the method)."""

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
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the results as JSON here."})

    def __post_init__(self):
        for name in ("per_device_eval_batch_size", "bptt", "eval_window", "eval_stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be an integer >= 1, got {value}")


def evaluate_folder(eval_args: EvalArguments, data_args=None) -> dict:
    """Load ``eval_args.model_name_or_path`` with the Auto classes and score the requested splits."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers the Auto classes)
    from hwlm import data as hdata
    from hwlm.evaluation import evaluate_perplexity, supports_state_carrying
    from hwlm.tokenization import load_tokenizer

    accelerator = Accelerator()
    tokenizer = load_tokenizer(eval_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(eval_args.model_name_or_path).to(accelerator.device)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, eval_args.model_name_or_path)
    if eval_args.prepared_data_dir:
        prepared = hdata.load_prepared(eval_args.prepared_data_dir, tokenizer=tokenizer)
    else:
        with accelerator.main_process_first():
            corpus = hdata.load_corpus(data_args)
            prepared = hdata.prepare_datasets(
                corpus, tokenizer, block_size=data_args.block_size,
                num_proc=data_args.preprocessing_num_workers, overwrite_cache=data_args.overwrite_cache,
            )
    if prepared.vocab_size is not None and prepared.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"the data has ids up to vocab_size {prepared.vocab_size} but the model's vocab_size is "
            f"{model.config.vocab_size}; evaluate with the tokenizer the model was trained with"
        )
    results = {"model": str(eval_args.model_name_or_path),
               "eval_method": "stream" if supports_state_carrying(model) else "sliding_window"}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for split in [s.strip() for s in eval_args.splits.split(",") if s.strip()]:
        res = evaluate_perplexity(
            model, prepared.stream_tensor(split), accelerator=accelerator,
            batch_size=eval_args.per_device_eval_batch_size, bptt=eval_args.bptt,
            window=eval_args.eval_window, stride=eval_args.eval_stride, pad_token_id=pad_id,
        )
        for key, value in res.items():
            results[f"{split}_{key}"] = value
    if accelerator.is_main_process:
        for split in eval_args.splits.split(","):
            if f"{split}_perplexity" in results:
                print(f"{split}: perplexity {results[f'{split}_perplexity']:.2f} over {results[f'{split}_num_tokens']} tokens")
        if eval_args.output_file:
            Path(eval_args.output_file).write_text(json.dumps(results, indent=2))
    return results


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(EvalArguments, DataArguments)`` from the command line (flags, or a ``--config`` preset)."""
    from hwlm.data import DataArguments

    return parse_command((EvalArguments, DataArguments), argv, prog=PROG, description=__doc__)


def run(argv: Optional[list[str]] = None) -> dict:
    """Parse the flags and score the splits; returns the results mapping."""
    eval_args, data_args = parse(argv)
    check_model_folder(eval_args.model_name_or_path)
    return evaluate_folder(eval_args, data_args)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag, folder, data file or tokenizer is a one-line error, exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
