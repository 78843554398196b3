"""``hwlm-push FOLDER REPO_ID``: upload a trained model folder (model, tokenizer, code, card, results) to the Hub.

Needs a token (``huggingface-cli login`` or ``HF_TOKEN``). ``HF_ENDPOINT`` selects another hub. A Hub that does
not answer fails the upload after ``--timeout`` seconds per request and ``--max_retries`` further attempts.
"""

from __future__ import annotations

import argparse
import sys

from hwlm.hub import HUB_MAX_RETRIES, HUB_TIMEOUT


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The folder, the repository id and the upload options from the command line."""
    parser = argparse.ArgumentParser(prog="hwlm-push", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="The output folder of hwlm-train.")
    parser.add_argument("repo_id", help="Hub repository, e.g. your-name/hwlm-ptb-lstm.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--commit_message", default="Upload hwlm model")
    parser.add_argument("--timeout", type=float, default=HUB_TIMEOUT,
                        help="Seconds without an answer before a request fails (default %(default)s).")
    parser.add_argument("--max_retries", type=int, default=HUB_MAX_RETRIES,
                        help="Further attempts after a timeout, lost connection or 5xx answer (default %(default)s).")
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def run(argv: list[str] | None = None) -> str:
    """Parse the flags and upload the folder; returns the commit URL."""
    from hwlm.hub import push_folder

    args = parse(argv)
    url = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.commit_message,
                      timeout=args.timeout, max_retries=args.max_retries)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return url


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 after the upload, 1 with a one-line ``hwlm-push: error: ...`` otherwise."""
    from hwlm.hub import HubUnreachable

    try:
        run(argv)
    except (HubUnreachable, FileNotFoundError, ValueError) as err:
        print(f"hwlm-push: error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
