"""Thin wrapper: ``python scripts/course_transformer.py ...``; see hwlm.cli.course and hwlm.course."""

from hwlm.cli.course import main

if __name__ == "__main__":
    main()
