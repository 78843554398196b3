"""Thin wrapper: ``python scripts/plot_runs.py OUT.png LABEL=RUN ...``; see hwlm.cli.plot_runs and hwlm.research.results."""

from hwlm.cli.plot_runs import main

if __name__ == "__main__":
    main()
