"""``python scripts/plot_runs.py OUT.png LABEL=RUN ...``: logged runs side by side against CPU time (or step).

Example (the figure of docs/transformer-vs-lstm.md)::

    python scripts/plot_runs.py docs/transformer-vs-lstm.png \
        "LSTM=docs/results/ptb-lstm-2h" "Transformer + memory=docs/results/ptb-transformer-2h"

RUN is a run folder holding metrics.jsonl (see hwlm.research.results). ``--x step`` plots against the optimiser step.
"""

from __future__ import annotations

import argparse

from hwlm.cli.common import run_main
from hwlm.errors import UserError

PROG = "plot_runs.py"


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """The parsed flags and ``{label: run folder}``.

    Raises:
        ValueError: a run not given as LABEL=RUN_FOLDER.
    """
    from hwlm.research.results import AXES

    parser = argparse.ArgumentParser(prog="plot_runs.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="the PNG to write")
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN", help="a label and a run folder")
    parser.add_argument("--x", choices=sorted(AXES), default="cpu_hours")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise UserError(f"{item!r} is not LABEL=RUN_FOLDER")
        runs[label] = folder
    return args, runs


def run(argv: list[str]) -> dict:
    """Parse the command line, draw the figure, print each run's best validation perplexity; return the curves."""
    from hwlm.research.results import plot_runs

    args, runs = parse(argv)
    drawn = plot_runs(runs, args.output, x=args.x, title=args.title)
    for label, curves in drawn.items():
        best = min((p for _, p in curves["validation"]), default=float("nan"))
        print(f"{label}: {len(curves['validation'])} evaluations, best validation perplexity {best:.2f}")
    return drawn


def main(argv: list[str] | None = None) -> None:
    """The command: `run`; a bad LABEL=RUN or a missing metrics.jsonl is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
