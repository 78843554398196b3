"""Shared pytest hooks: the header names the release of every library hwlm is tested against, so a failure in CI
(which runs the suite on the newest releases and on the lowest ones pyproject.toml allows) says which one broke."""

from importlib.metadata import PackageNotFoundError, version

STACK = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "huggingface_hub", "safetensors")


def stack_versions() -> str:
    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return ", ".join(one(name) for name in STACK)


def pytest_report_header(config):
    return f"hwlm tested against: {stack_versions()}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also under -q (which hides the header): a CI log then names the releases a failure happened on.
    terminalreporter.write_line(f"hwlm tested against: {stack_versions()}")
