"""``hwlm-eval``: perplexity of a saved model folder on the validation and test splits.

Examples::

    hwlm-eval --model_name_or_path outputs/quickstart --prepared_data_dir outputs/quickstart-data
    hwlm-eval --model_name_or_path outputs/ptb --train_file ptb.train.txt --validation_file ptb.valid.txt \\
        --test_file ptb.test.txt --per_device_eval_batch_size 1
"""

from __future__ import annotations

from typing import Optional

from hwlm.cli.common import check_model_folder, parse_command, run_main
from hwlm.settings import EvalArguments  # noqa: F401  (re-exported: hwlm-eval's settings)

PROG = "hwlm-eval"


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(EvalArguments, DataArguments, DynamicEvalSettings, NeuralCacheSettings)`` from the command line (flags, or a
    ``--config`` preset)."""
    from hwlm.settings import DataArguments, DynamicEvalSettings, NeuralCacheSettings

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
    from hwlm.allocator import keep_freed_memory
    from hwlm.evaluation.run import evaluate_folder

    keep_freed_memory()
    return evaluate_folder(eval_args, data_args, dynamic_args, cache_args)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag, folder, data file or tokenizer is a one-line error, exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
