"""``hwlm-push FOLDER REPO_ID``: upload a trained model folder (model, tokenizer, code, card, results) to the Hub.

Needs a token (``huggingface-cli login`` or ``HF_TOKEN``). ``HF_ENDPOINT`` selects another hub. A Hub that does
not answer fails the upload after ``--timeout`` seconds per request and ``--max_retries`` further attempts.

Example::

    hwlm-push outputs/quickstart your-name/hwlm-quickstart --private
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import parse_command, run_main
from hwlm.hub import HUB_MAX_RETRIES, HUB_TIMEOUT
from hwlm.errors import UserError

PROG = "hwlm-push"


@dataclass
class PushArguments:
    """What to upload, where, and how long to wait for the Hub."""

    folder: str = field(metadata={"help": "The output folder of hwlm-train."})
    repo_id: str = field(metadata={"help": "Hub repository, e.g. your-name/hwlm-ptb-lstm."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})
    commit_message: str = field(default="Upload hwlm model", metadata={"help": "The commit message on the Hub."})
    timeout: float = field(
        default=HUB_TIMEOUT, metadata={"help": "Seconds without an answer before a request fails."}
    )
    max_retries: int = field(
        default=HUB_MAX_RETRIES,
        metadata={"help": "Further attempts after a timeout, lost connection or 5xx answer."},
    )

    def __post_init__(self):
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UserError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.max_retries < 0:
            raise UserError(f"--max_retries must be an integer >= 0 (0: one attempt), got {self.max_retries!r}")
        folder = Path(self.folder)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"FOLDER {self.folder!r} is a file; pass the output folder of hwlm-train")


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(PushArguments,)`` from the command line (``FOLDER REPO_ID`` by position)."""
    return parse_command((PushArguments,), argv, prog=PROG, description=__doc__, positionals=("folder", "repo_id"))


def run(argv: Optional[list[str]] = None) -> str:
    """Parse the flags and upload the folder; returns the commit URL."""
    from hwlm.hub import push_folder

    (args,) = parse(argv)
    url = push_folder(args.folder, args.repo_id, private=args.private, commit_message=args.commit_message,
                      timeout=args.timeout, max_retries=args.max_retries)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")
    return url


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: exit 0 after the upload; a one-line ``hwlm-push: error: ...`` with exit status 2 for
    a bad folder or flag, 1 when the Hub did not answer (see `hwlm.cli.common`)."""
    from hwlm.hub import HubUnreachable

    run_main(PROG, run, argv, failures=(HubUnreachable,))


if __name__ == "__main__":
    main()
