"""README.md stays true: its Python blocks run, and every shell command in it parses with its own parser.

The commands themselves run at toy scale in the tests of their modules (test_cli_*.py, test_data.py, ...).
"""

import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
COMMANDS = {
    "hwlm-train": "hwlm.cli.train",
    "hwlm-eval": "hwlm.cli.evaluate",
    "hwlm-generate": "hwlm.cli.generate",
    "hwlm-push": "hwlm.cli.push",
    "hwlm-prepare": "hwlm.cli.prepare",
    "hwlm-tokenizer": "hwlm.cli.train_tokenizer",
    "hwlm-gradflow": "hwlm.cli.gradflow",
}
SCRIPTS = {
    "scripts/train.py": "hwlm.cli.train",
    "scripts/course_transformer.py": "hwlm.cli.course",
    "scripts/plot_runs.py": "hwlm.cli.plot_runs",
}
#: Documents besides the README whose shell commands must parse too.
DOCS = ["docs/transformer-vs-lstm.md"]


def shell_lines(text: str = README):
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", text, flags=re.DOTALL):
        if lang == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line:
                    yield line


def doc_shell_lines():
    for doc in DOCS:
        yield from shell_lines((REPO / doc).read_text(encoding="utf-8"))


def test_readme_has_the_two_commands_and_documents_each_console_script():
    lines = list(shell_lines())
    assert lines[:2] == ["make quickstart", "make test"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(COMMANDS)
    for name in COMMANDS:
        assert any(line.startswith(name + " ") for line in lines), f"{name} is not documented"
        assert scripts[name] == COMMANDS[name] + ":main"


@pytest.mark.parametrize("line", list(shell_lines()) + list(doc_shell_lines()))
def test_readme_shell_command_parses(line, monkeypatch):
    monkeypatch.chdir(REPO)  # presets and data paths in the README are relative to the repository root
    argv = shlex.split(line)
    while "=" in argv[0] and not argv[0].startswith("-"):  # leading environment assignments (ACCELERATE_USE_CPU=1)
        argv = argv[1:]
    if argv[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
        assert argv[1] in targets
        return
    if argv[:2] == ["accelerate", "launch"]:
        script = next(a for a in argv if a.endswith(".py"))
        from accelerate.commands.launch import launch_command_parser

        launch_command_parser().parse_args(argv[2:])  # the launch flags are accelerate's own
        argv = [script] + argv[argv.index(script) + 1 :]
        module = SCRIPTS[script]
    elif argv[:3] == ["python", "-m", "hwlm.run_script"]:
        # Runs another program's script (transformers' run_clm.py, not shipped here) with hwlm imported: its own
        # parser takes the script and passes the rest on; test_conformance runs it on a run_clm-style script.
        from hwlm.run_script import parse

        assert parse(argv[3:]).script.endswith(".py")
        return
    elif argv[0] == "python":
        argv = argv[1:]
        module = SCRIPTS[argv[0]]
    else:
        module = COMMANDS[argv[0]]
    parsed = importlib.import_module(module).parse(argv[1:])
    assert parsed


def test_readme_python_blocks_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tokenizer").symlink_to(REPO / "tokenizer")
    blocks = [body for lang, body in BLOCKS if lang == "python"]
    assert len(blocks) >= 2
    for body in blocks:
        exec(compile(body, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "torch.Size([1, 5, 2421])" in printed
    assert "the value of the expression " in printed and "the value of " in printed
    assert (tmp_path / "my-lstm" / "model.safetensors").exists()
    assert (tmp_path / "my-transformer" / "model.safetensors").exists()
    assert "eval_loss" in printed and "onnx matches: True" in printed
