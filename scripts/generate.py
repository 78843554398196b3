"""Thin wrapper so that `accelerate launch scripts/generate.py ...` and `python scripts/generate.py ...` work; see hwlm.cli.generate."""

from hwlm.cli.generate import main

if __name__ == "__main__":
    main()
