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

from hwlm.cli.common import parse_command, run_main
from hwlm.training import arguments
from hwlm.training.arguments import run_argument_classes

PROG = "hwlm-train"


def parse(argv: list[str] | None = None) -> tuple:
    """The run settings (``--config`` preset + flags): ``(ModelArguments, DataArguments, TrainingArguments)``.

    Each dataclass checks its own fields here; the checks that read the files and folders named run in `run`.
    """
    return parse_command(run_argument_classes(), argv, prog=PROG, description=__doc__)


def run(argv: list[str] | None = None) -> dict:
    """Parse the run settings (``--config`` preset + flags) and train; returns the results mapping.

    `train` runs the cross-field and file checks (`hwlm.training.arguments.check_settings`) before any data,
    model or process group."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_args, data_args, train_args = parse(argv)
    # One process: the cross-field checks before the training stack is imported (accelerate, datasets: seconds);
    # those that read the model's config load transformers' configs, the others need nothing. `train` runs them
    # again, cheaply. Under a multi-process launcher they stay in `train` only, where every rank reaches them at
    # the same point and reports its own error before the launcher ends the others.
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        arguments.check_settings(model_args, data_args, train_args)
    from hwlm.allocator import keep_freed_memory
    from hwlm.training.loop import train

    keep_freed_memory()  # each step's logits reused, not page-faulted afresh (see hwlm.allocator)

    command = "hwlm-train " + " ".join(shlex.quote(a) for a in argv)
    return train(model_args, data_args, train_args, command=command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 when done, 128+signal (130 SIGINT, 143 SIGTERM) when a signal stopped the run
    after saving, 2 with a one-line ``hwlm-train: error: ...`` for bad settings or inputs, 1 (also one line) for a
    diverged run; ``--debug`` or ``HWLM_DEBUG=1`` shows the traceback (see `hwlm.cli.common`)."""
    from hwlm.training.run import TrainingDiverged  # (standard library only)

    results = run_main(PROG, run, argv, failures=(TrainingDiverged,))
    if results.get("exit_code"):
        sys.exit(results["exit_code"])


if __name__ == "__main__":
    main()
