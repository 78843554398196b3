"""Thin wrapper so that `python scripts/gradflow.py ...` works; see hwlm.cli.gradflow (console command hwlm-gradflow)."""

from hwlm.cli.gradflow import main

if __name__ == "__main__":
    main()
