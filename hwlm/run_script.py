"""Run a Python script with hwlm's model types registered, e.g. transformers' own example scripts:

    python -m hwlm.run_script run_clm.py --model_type hwlm_lstm --config_overrides hidden_size=64 ...

`run_clm.py` and `run_clm_no_trainer.py` build a new model from `--model_type` through transformers' Auto classes,
which know hwlm's types only once `hwlm` is imported; this imports it, then runs the script as `__main__` with the
remaining arguments (as `python run_clm.py ...` would). A folder saved by hwlm needs none of this:
`--config_name <folder> --trust_remote_code` loads its code from the folder.
"""

from __future__ import annotations

import argparse
import runpy
import sys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hwlm.run_script",
        description="Run a Python script (e.g. transformers' run_clm.py) with hwlm's model types registered.",
    )
    parser.add_argument("script", help="path of the Python script to run as __main__")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    import hwlm  # noqa: F401  registers hwlm_rnn, hwlm_lstm and hwlm_transformer with the Auto classes

    sys.argv = [args.script, *args.args]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
