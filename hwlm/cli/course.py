"""``python scripts/course_transformer.py``: the course's encoder-decoder Transformer LM (targets fed to the decoder)
against hwlm's decoder-only Transformer of the same width, depth and heads, trained on the same windows.

Examples::

    # Penn Treebank (a local copy: HWLM_DATA_DIR=<folder holding ptb/>), 300 steps each
    python scripts/course_transformer.py --dataset_name ptb --output_dir outputs/course
    # any corpus the data flags of hwlm-prepare name; the embedded corpus by default
    python scripts/course_transformer.py --max_train_steps 100 --output_dir outputs/course-toy

Writes ``course.json`` (curves, perplexities, continuations, the future-leak check) and ``course.png`` into
``--output_dir``. See `hwlm.research.course` for what each figure means.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hwlm.cli.common import parse_command, run_main
from hwlm.errors import UserError

PROG = "course_transformer.py"


@dataclass
class CourseArguments:
    """Size and length of the comparison (the same for both models)."""

    output_dir: str = field(default="outputs/course", metadata={"help": "Where course.json and course.png go."})
    max_train_steps: int = field(default=300, metadata={"help": "AdamW steps per model."})
    hidden_size: int = field(default=256, metadata={"help": "Model width (feed-forward 4x)."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Layers (the course model: encoder and decoder each)."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    bptt: int = field(default=35, metadata={"help": "Window length."})
    train_batch_size: int = field(default=20, metadata={"help": "Windows per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    max_eval_windows: int = field(default=200, metadata={"help": "Validation windows scored per model."})
    seed: int = field(default=0, metadata={"help": "Seed of weights and window order."})
    num_threads: int = field(default=1, metadata={"help": "CPU threads for torch."})

    def __post_init__(self):
        for name in ("max_train_steps", "hidden_size", "num_hidden_layers", "num_attention_heads", "bptt",
                     "train_batch_size", "max_eval_windows", "num_threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"--hidden_size {self.hidden_size} must be a multiple of --num_attention_heads "
                             f"{self.num_attention_heads}")
        if not self.learning_rate > 0:
            raise UserError(f"--learning_rate must be a positive number, got {self.learning_rate}")


def plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=100)
    for (name, curve), color in zip(report.curves.items(), ("tab:red", "tab:blue")):
        steps, ppl = zip(*curve)
        ax.plot(steps, ppl, color=color, label=f"{name}: training (its own loss)")
        ax.axhline(report.validation_perplexity[name], color=color, linestyle="--",
                   label=f"{name}: validation, past only ({report.validation_perplexity[name]:.0f})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("perplexity")
    ax.set_title("Targets fed to the decoder: a training curve that means nothing")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse(argv: list[str] | None = None) -> tuple:
    """``(CourseArguments, DataArguments)`` from the command line."""
    from hwlm.settings import DataArguments

    return parse_command((CourseArguments, DataArguments), argv, prog=PROG, description=__doc__)


def run(argv: list[str] | None = None) -> dict:
    """Parse the flags (plus hwlm-prepare's data flags), train both models, write course.json/png; return the JSON."""
    args, data_args = parse(argv)
    import torch  # after parsing: --help and a settings error answer without torch

    from hwlm import data as hdata
    from hwlm.research.course import compare_with_hwlm

    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    corpus = hdata.load_corpus(data_args)
    tokenizer = hdata.resolve_tokenizer(data_args, corpus)
    prepared = hdata.prepare_datasets(corpus, tokenizer, block_size=data_args.block_size,
                                      num_proc=data_args.preprocessing_num_workers, output_dir=None,
                                      source=hdata.describe_source(data_args))
    report = compare_with_hwlm(
        prepared.stream_tensor("train"), prepared.stream_tensor("validation"), len(tokenizer),
        steps=args.max_train_steps, width=args.hidden_size, heads=args.num_attention_heads,
        layers=args.num_hidden_layers, window=args.bptt, batch_size=args.train_batch_size,
        learning_rate=args.learning_rate, max_eval_windows=args.max_eval_windows, seed=args.seed,
        decode=lambda ids: tokenizer.decode(ids).strip(),
    )
    payload = {"settings": asdict(args), "prompt": tokenizer.decode(prepared.stream_tensor("validation")[:10]).strip(),
               **asdict(report)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "course.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot(report, out / "course.png")
    for name in report.curves:
        print(f"{name}: training ppl {report.train_perplexity[name]:.2f}, validation ppl (past only) "
              f"{report.validation_perplexity[name]:.2f}, sees the future: {report.sees_the_future[name]}\n"
              f"  continuation: {report.continuation[name]}")
    return payload


def main(argv: list[str] | None = None) -> None:
    """The command: `run`; a bad flag or input is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
