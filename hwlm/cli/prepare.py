"""``hwlm-prepare``: load a corpus, tokenise it, save streams and blocks for training.

Examples::

    hwlm-prepare --output_dir outputs/data                      # embedded corpus, tokenizer/
    hwlm-prepare --train_file train.txt --validation_file valid.txt --test_file test.txt \\
        --output_dir outputs/ptb                                 # trains a word-level tokenizer
    hwlm-prepare --dataset_name Salesforce/wikitext --dataset_config_name wikitext-2-v1 \\
        --output_dir outputs/wt2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from transformers import HfArgumentParser

from hwlm.data import DataArguments, describe_source, load_corpus, load_or_train_tokenizer, prepare_datasets
from hwlm.tokenization import TokenizerArguments
from hwlm.training.outputs import OutputLock, check_output_dir

MARKER = "hwlm_data.json"  # written by hwlm.data.save_prepared; marks the folder as hwlm-prepare's
WRITES = ("streams", "blocks", "tokenizer", MARKER)


@dataclass
class PrepareArguments:
    """Where ``hwlm-prepare`` writes its folder."""

    output_dir: str = field(
        default="outputs/data",
        metadata={"help": "Folder for streams/, blocks/, tokenizer/ and hwlm_data.json (pass it to training "
                  "as --prepared_data_dir)."},
    )


def parse_args(classes: tuple, argv: Optional[list[str]], description: str) -> tuple:
    """Parse ``argv`` (or one .json/.yaml file of field: value) into the given dataclasses.

    Args:
        classes (`tuple[type, ...]`): dataclasses with help metadata.
        argv (`list[str]`, *optional*): arguments; default ``sys.argv[1:]``.
        description (`str`): shown by ``--help``.
    Returns:
        `tuple` of dataclass instances, in the order of ``classes``.
    """
    parser = HfArgumentParser(classes, description=description)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        if argv[0].endswith(".json"):
            return parser.parse_json_file(argv[0])
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def format_stats(stats: dict) -> str:
    """A Markdown table of per-split counts (lines, words, tokens with <eos>, OOV rate, blocks)."""
    rows = ["| split | lines | words | tokens (with <eos>) | OOV rate | blocks |", "|---|---:|---:|---:|---:|---:|"]
    for split, s in stats.items():
        rows.append(f"| {split} | {s['lines']:,} | {s['words']:,} | {s['tokens']:,} | {100 * s['oov_rate']:.2f}% "
                    f"| {s['blocks']:,} |")
    return "\n".join(rows)


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(DataArguments, TokenizerArguments, PrepareArguments)`` from the command line."""
    return parse_args((DataArguments, TokenizerArguments, PrepareArguments), argv, description=__doc__.split("\n")[0])


def main(argv: Optional[list[str]] = None) -> None:
    """Run ``hwlm-prepare`` (see the module docstring); ``argv`` defaults to ``sys.argv[1:]``."""
    data_args, tok_args, prep_args = parse(argv)
    out = Path(prep_args.output_dir)
    # before any work: write only into a new or empty folder or an earlier hwlm-prepare output
    check_output_dir(out, command="hwlm-prepare", marker=MARKER, would_write=WRITES, rewrite_own=True)
    corpus = load_corpus(data_args)
    tokenizer = load_or_train_tokenizer(data_args, corpus, tok_args, show_progress=True)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, "hwlm-prepare"):
        check_output_dir(out, command="hwlm-prepare", marker=MARKER, would_write=WRITES, rewrite_own=True)
        prepared = prepare_datasets(
            corpus,
            tokenizer,
            block_size=data_args.block_size,
            num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
            output_dir=out,
            source=describe_source(data_args),
        )
    print(format_stats(prepared.stats))
    print(f"vocabulary: {prepared.vocab_size:,} entries (tokenizer fingerprint {prepared.tokenizer_fingerprint}), "
          f"block_size {prepared.block_size}")
    print(f"saved to {prep_args.output_dir}")


if __name__ == "__main__":
    main()
