"""Thin wrapper so that `accelerate launch scripts/evaluate.py ...` and `python scripts/evaluate.py ...` work; see hwlm.cli.evaluate."""

from hwlm.cli.evaluate import main

if __name__ == "__main__":
    main()
