"""Thin wrapper so that `accelerate launch scripts/push.py ...` and `python scripts/push.py ...` work; see hwlm.cli.push."""

from hwlm.cli.push import main

if __name__ == "__main__":
    main()
