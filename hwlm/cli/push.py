"""``hwlm-push FOLDER REPO_ID``: upload a trained model folder (model, tokenizer, code, card, results) to the Hub.

Needs a token (``huggingface-cli login`` or ``HF_TOKEN``). ``HF_ENDPOINT`` selects another hub.
"""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The folder, the repository id and the upload options from the command line."""
    parser = argparse.ArgumentParser(prog="hwlm-push", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="The output folder of hwlm-train.")
    parser.add_argument("repo_id", help="Hub repository, e.g. your-name/hwlm-ptb-lstm.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit_message", default="Upload hwlm model")
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def run(argv: list[str] | None = None) -> str:
    """Parse the flags and upload the folder; returns the commit URL."""
    from hwlm.hub import push_folder

    args = parse(argv)
    url = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.commit_message)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return url


def main(argv: list[str] | None = None) -> None:
    """Console entry point: `run` without a return value (a console script exits with what `main` returns)."""
    run(argv)


if __name__ == "__main__":
    main()
