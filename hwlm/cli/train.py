"""``hwlm-train``: train a model (``accelerate launch scripts/train.py ...`` or a plain command).

Examples::

    hwlm-train --config presets/quickstart.yaml --output_dir outputs/quickstart
    hwlm-train --config presets/quickstart.yaml --output_dir outputs/quickstart --resume_from_checkpoint latest
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config presets/quickstart.yaml  # 2 CPU processes
    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --config presets/wikitext2-lstm.yaml  # 2 GPUs
"""

from __future__ import annotations

import os
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
    """Console entry point: exit 0 when done, 128+signal (130 SIGINT, 143 SIGTERM) when a signal stopped the run
    after saving, 2 with a one-line ``hwlm-train: error: ...`` for bad settings or inputs (the traceback with
    ``HWLM_DEBUG=1``), 1 for a diverged run."""
    from hwlm.training.loop import TrainingDiverged

    try:
        results = run(argv)
    except (ValueError, FileNotFoundError, TrainingDiverged) as err:
        if os.environ.get("HWLM_DEBUG"):
            raise
        print(f"hwlm-train: error: {err}", file=sys.stderr)
        sys.exit(1 if isinstance(err, TrainingDiverged) else 2)
    if results.get("exit_code"):
        sys.exit(results["exit_code"])


if __name__ == "__main__":
    main()
