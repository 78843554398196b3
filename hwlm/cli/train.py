"""``hwlm-train``: train a model (``accelerate launch scripts/train.py ...`` or a plain command).

Examples::

    hwlm-train --config presets/quickstart.yaml --output_dir outputs/quickstart
    hwlm-train --config presets/quickstart.yaml --output_dir outputs/quickstart --resume_from_checkpoint latest
    accelerate launch --num_processes 2 scripts/train.py --config presets/wikitext2-lstm.yaml
"""

from __future__ import annotations

import shlex
import sys

from hwlm.training.arguments import parse_args


def parse(argv: list[str] | None = None) -> tuple:
    """The run settings (``--config`` preset + flags): ``(ModelArguments, DataArguments, TrainingArguments)``."""
    return parse_args(list(sys.argv[1:] if argv is None else argv))


def run(argv: list[str] | None = None) -> dict:
    """Parse the run settings (``--config`` preset + flags) and train; returns the results mapping."""
    from hwlm.training.loop import train

    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, train_args = parse(argv)
    command = "hwlm-train " + " ".join(shlex.quote(a) for a in argv)
    return train(model_args, data_args, train_args, command=command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: `run` without a return value (a console script exits with what `main` returns)."""
    run(argv)


if __name__ == "__main__":
    main()
