"""Thin wrapper: ``python scripts/course_transformer.py ...``; see hwlm.cli.course and hwlm.research.course."""

from hwlm.cli.course import main

if __name__ == "__main__":
    main()
