"""Thin wrapper over hwlm.cli.prepare (also installed as `hwlm-prepare`)."""

from hwlm.cli.prepare import main

if __name__ == "__main__":
    main()
