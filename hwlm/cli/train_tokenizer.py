"""``hwlm-tokenizer``: train a word-level tokenizer on a corpus and save it for ``AutoTokenizer``.

Writes ``tokenizer.json``, ``tokenizer_config.json`` and a ``README.md`` recording the corpus
(for the embedded corpus: the Python version it ships with) and the settings. With no data flags
this rebuilds the committed ``tokenizer/``::

    hwlm-tokenizer --output_dir tokenizer
    hwlm-tokenizer --train_file train.txt --output_dir outputs/tok --vocab_size 10000 --min_frequency 2
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import parse_command, run_main
from hwlm.settings import DataArguments, TokenizerArguments
from hwlm.output_folders import OutputLock, check_output_dir


PROG = "hwlm-tokenizer"
MARKER = "hwlm_tokenizer.json"  # the build record doubles as the folder's ownership marker
WRITES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md", MARKER)


@dataclass
class TokenizerOutputArguments:
    """Where ``hwlm-tokenizer`` writes the tokenizer."""

    output_dir: str = field(default="outputs/tokenizer", metadata={"help": "Folder for the tokenizer files."})


def render_readme(source: dict, settings: dict, vocab_size: int, fingerprint: str) -> str:
    """The README written next to a trained tokenizer: corpus, settings, vocabulary, how to rebuild.

    Args:
        source (`dict`): from `hwlm.data.describe_source`.
        settings (`dict`): the `train_word_tokenizer` keyword arguments used.
        vocab_size (`int`), fingerprint (`str`).
    Returns:
        `str`, Markdown; deterministic for the same inputs (no dates, no absolute paths of the machine
        for the embedded corpus).
    """
    from hwlm.data import EMBEDDED_SPLIT_PERCENT
    from hwlm.tokenization import SPECIAL_TOKENS

    lines = ["# hwlm word-level tokenizer", ""]
    lines += ["Load it with `transformers.AutoTokenizer.from_pretrained(<this folder>)`.", ""]
    lines += ["## Corpus", ""]
    if source["kind"] == "embedded":
        split = ", ".join(f"{s} {p}%" for s, p in EMBEDDED_SPLIT_PERCENT.items())
        lines += [
            f"- Source: {source['source']}",
            f"- Python version: {source['python_version']}",
            f"- Content SHA-256 (topics as sorted JSON): `{source['sha256']}`",
            f"- Split by SHA-256 of each topic key modulo 100 ({split}); topics per split: "
            + ", ".join(f"{k} {v}" for k, v in source["topics"].items()),
            "- Trained on the train split only.",
        ]
    else:
        for k, v in source.items():
            lines.append(f"- {k}: {v}")
    lines += ["", "## Settings", ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    lines += [
        "",
        "## Vocabulary",
        "",
        f"- {vocab_size:,} entries; special tokens first: "
        + ", ".join(f"`{t}`={i}" for i, t in enumerate(SPECIAL_TOKENS))
        + "; then words by decreasing frequency.",
        f"- Fingerprint (vocabulary + normalizer + pre-tokenizer): `{fingerprint}`",
        "- Encoding a prompt does not append `<eos>`; the data pipeline appends one per line.",
        "",
        "## Rebuild",
        "",
        "```",
        "hwlm-tokenizer --output_dir tokenizer" if source["kind"] == "embedded" else "hwlm-tokenizer <same data flags>",
        "```",
        "",
    ]
    return "\n".join(lines)


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(DataArguments, TokenizerArguments, TokenizerOutputArguments)`` from the command line (flags, a
    ``--config`` preset, or a lone preset path)."""
    return parse_command(
        (DataArguments, TokenizerArguments, TokenizerOutputArguments), argv, prog=PROG, description=__doc__
    )


def run(argv: Optional[list[str]] = None) -> None:
    """Parse the flags, train the tokenizer and save it with its README (see the module docstring)."""
    data_args, tok_args, out_args = parse(argv)
    # after parsing: --help and a settings error answer without importing datasets, transformers or torch
    from hwlm.data import default_tokenizer_settings, describe_source, load_corpus, train_on_split
    from hwlm.tokenization import tokenizer_fingerprint

    out = Path(out_args.output_dir)
    # before any work: never replace a file the user owns (a README.md, another tokenizer's config)
    check_output_dir(out, command="hwlm-tokenizer", marker=MARKER, would_write=WRITES, rewrite_own=True)
    corpus = load_corpus(data_args)  # first: it checks the input files and names the flag of a bad one
    source = describe_source(data_args)
    settings = tok_args.resolved(default_tokenizer_settings(data_args))
    tokenizer = train_on_split(corpus["train"], settings, show_progress=True)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = tokenizer_fingerprint(tokenizer)
    build = {"source": source, "settings": settings, "vocab_size": len(tokenizer), "fingerprint": fingerprint}
    with OutputLock(out, "hwlm-tokenizer"):
        check_output_dir(out, command="hwlm-tokenizer", marker=MARKER, would_write=WRITES, rewrite_own=True)
        # the marker first, so a crash after it leaves a folder recognised as hwlm's; it lists no "written"
        # files (the tokenizer always writes the same few, WRITES), which keeps it byte-identical to tokenizer/'s
        (out / MARKER).write_text(json.dumps(build, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(str(out))
        (out / "README.md").write_text(render_readme(source, settings, len(tokenizer), fingerprint), encoding="utf-8")
    print(f"vocabulary: {len(tokenizer):,} entries, fingerprint {fingerprint}; saved to {out}")


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag or input file is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
