"""Thin wrapper so that `accelerate launch scripts/train.py ...` and `python scripts/train.py ...` work; see hwlm.cli.train."""

from hwlm.cli.train import main

if __name__ == "__main__":
    main()
