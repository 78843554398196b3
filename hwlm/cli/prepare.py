"""``hwlm-prepare``: load a corpus, tokenise it, save streams and blocks for training.

Examples::

    hwlm-prepare --output_dir outputs/data                      # embedded corpus, tokenizer/
    hwlm-prepare --train_file train.txt --validation_file valid.txt --test_file test.txt \\
        --output_dir outputs/ptb                                 # trains a word-level tokenizer
    hwlm-prepare --dataset_name Salesforce/wikitext --dataset_config_name wikitext-2-v1 \\
        --output_dir outputs/wt2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import parse_command, run_main
from hwlm.settings import DataArguments, TokenizerArguments
from hwlm.output_folders import check_output_dir, staged_output

PROG = "hwlm-prepare"
MARKER = "hwlm_data.json"  # written by hwlm.data.save_prepared; marks the folder as hwlm-prepare's
WRITES = ("streams", "blocks", "tokens", "tokenizer", MARKER)


@dataclass
class PrepareArguments:
    """Where ``hwlm-prepare`` writes its folder."""

    output_dir: str = field(
        default="outputs/data",
        metadata={"help": "Folder for streams/, blocks/, tokenizer/ and hwlm_data.json (pass it to training "
                  "as --prepared_data_dir)."},
    )


def format_stats(stats: dict) -> str:
    """A Markdown table of per-split counts (lines, words, tokens with <eos>, OOV rate, blocks)."""
    rows = ["| split | lines | words | tokens (with <eos>) | OOV rate | blocks |", "|---|---:|---:|---:|---:|---:|"]
    for split, s in stats.items():
        rows.append(f"| {split} | {s['lines']:,} | {s['words']:,} | {s['tokens']:,} | {100 * s['oov_rate']:.2f}% "
                    f"| {s['blocks']:,} |")
    return "\n".join(rows)


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(DataArguments, TokenizerArguments, PrepareArguments)`` from the command line (flags, a ``--config``
    preset, or a lone preset path: ``hwlm-prepare settings.yaml``)."""
    return parse_command((DataArguments, TokenizerArguments, PrepareArguments), argv, prog=PROG, description=__doc__)


def run(argv: Optional[list[str]] = None) -> None:
    """Parse the flags, then load, tokenise and save the corpus (see the module docstring)."""
    data_args, tok_args, prep_args = parse(argv)
    # after parsing: --help and a settings error answer without importing datasets, transformers or torch
    from hwlm.allocator import keep_freed_memory
    from hwlm.data import describe_source, load_corpus, prepare_datasets, tokenizer_and_train_ids

    keep_freed_memory()  # each batch's Arrow and numpy temporaries reuse the previous one's pages (hwlm.allocator)
    out = Path(prep_args.output_dir)
    # before any work: write only into a new or empty folder or an earlier hwlm-prepare output
    check_output_dir(out, command="hwlm-prepare", marker=MARKER, would_write=WRITES, rewrite_own=True)
    corpus = load_corpus(data_args)
    # a tokenizer trained here comes with the train split encoded from the same pass over the text; with
    # --preprocessing_num_workers > 1 the split is encoded by that many processes instead (cached by datasets)
    one_process = (data_args.preprocessing_num_workers or 1) == 1
    tokenizer, train_ids = tokenizer_and_train_ids(data_args, corpus, tok_args, encode_train=one_process,
                                                   show_progress=True)
    # written into a sibling folder that replaces the old one only when complete: an interrupt, a full disk or a
    # kill leaves the previous folder as it was (never old hwlm_data.json over new tokens)
    with staged_output(out, "hwlm-prepare", own=WRITES) as stage:
        check_output_dir(out, command="hwlm-prepare", marker=MARKER, would_write=WRITES, rewrite_own=True)
        prepared = prepare_datasets(
            corpus,
            tokenizer,
            block_size=data_args.block_size,
            num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
            output_dir=stage,
            source=describe_source(data_args),
            encoded=None if train_ids is None else {"train": train_ids},
        )
    print(format_stats(prepared.stats))
    print(f"vocabulary: {prepared.vocab_size:,} entries (tokenizer fingerprint {prepared.tokenizer_fingerprint}), "
          f"block_size {prepared.block_size}")
    print(f"saved to {prep_args.output_dir}")


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag or input file is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
