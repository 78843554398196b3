"""Every ``hwlm-*`` command reports a user error on one line, ``hwlm-<command>: error: ...``, with exit status 2.

For each command that takes them: a missing input, an empty file, a non-UTF-8 file, a directory given as a file
(or a file given as a folder), a bad flag value and (hwlm-eval, hwlm-generate) a tokenizer that does not fit the
model. The cases run the command's console entry point (``main``, what pyproject's [project.scripts] names)
in-process, which is fast; one case per command also runs ``python -m hwlm.cli.<module>`` in a subprocess, and
``--debug`` / ``HWLM_DEBUG=1`` bring the traceback back. `hwlm.cli.common` is tested directly for the exit
statuses of run failures, Ctrl-C and programming errors, for ``--help`` and for ``--config`` presets.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from _toy import WORDS, toy_lines, write_toy_corpus
from hwlm.errors import UserError
from hwlm.models.config_checks import InvalidInput

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
ENV.pop("HWLM_DEBUG", None)

# every console command and its module, as pyproject.toml declares them
MODULES = {
    name: target.split(":")[0]
    for name, target in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"].items()
}


def _save_model(folder: Path, tokenizer, vocab_size: int) -> Path:
    """A tiny LSTM saved with save_pretrained, and ``tokenizer`` next to it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers the Auto classes)

    config = AutoConfig.for_model("hwlm_lstm", vocab_size=vocab_size, embedding_size=8, hidden_size=8,
                                  num_hidden_layers=1, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Paths of good and bad inputs, made once for the module."""
    from hwlm.tokenization import train_word_tokenizer

    root = tmp_path_factory.mktemp("cli_errors")
    paths = {k: v for k, v in write_toy_corpus(root / "text", n_train=60, n_eval=10).items()}
    (root / "empty.txt").write_text("")
    (root / "latin1.txt").write_bytes("caf\u00e9 w1 w2\n".encode("latin-1"))  # 0xe9 alone is not UTF-8
    (root / "a_dir").mkdir()
    (root / "a_file.txt").write_text("w1 w2\n")
    tokenizer = train_word_tokenizer(toy_lines(100, seed=0) + [" ".join(WORDS)])
    _save_model(root / "model", tokenizer, vocab_size=len(tokenizer))
    _save_model(root / "mismatched", tokenizer, vocab_size=len(tokenizer) // 2)  # ids past the embedding
    for name, content in (("empty_config", b""), ("latin1_config", b'{"model_type": "hwlm_lstm\xe9"}')):
        (root / name).mkdir()
        (root / name / "config.json").write_bytes(content)
    for name in ("empty", "latin1", "a_dir", "a_file"):
        paths[name] = str(root / ("a_dir" if name == "a_dir" else f"{name}.txt"))
    for name in ("model", "mismatched", "empty_config", "latin1_config"):
        paths[name] = str(root / name)
    paths["missing"] = str(root / "missing.txt")
    paths["out"] = str(root / "out")
    paths["tokenizer_size"] = len(tokenizer)
    return paths


def data(p: dict, train: str) -> list[str]:
    """The three data flags with ``train`` as the training file."""
    return ["--train_file", p[train], "--validation_file", p["validation_file"], "--test_file", p["test_file"]]


# (command, case, argv from the inputs, the message after "hwlm-<command>: error: ")
DATA_FILE_CASES = [
    ("missing", r"--train_file '.*missing.txt' does not exist"),
    ("empty", r"--train_file '.*empty.txt' is empty \(0 bytes\)"),
    ("latin1", r"latin1.txt: line 1, byte 4 is not valid UTF-8 \(0xe9.*--replace_invalid_utf8"),
    ("a_dir", r"--train_file '.*a_dir' does not exist \(or is not a file\)"),
]
MODEL_FOLDER_CASES = [
    ("missing", r"--model_name_or_path '.*missing.txt' does not exist; pass a folder written by hwlm-train"),
    ("empty_config", r"empty_config/config.json is empty"),
    ("latin1_config", r"latin1_config/config.json is not UTF-8 \(byte 25\)"),
    ("a_file", r"--model_name_or_path '.*a_file.txt' is a file; pass the folder holding config.json"),
]
MISMATCH = r"the tokenizer of '.*mismatched' has (\d+) entries but the model's vocab_size is (\d+)"


def _cases():
    out = []
    for case, message in DATA_FILE_CASES:
        out += [
            ("hwlm-train", case, lambda p, c=case: [*data(p, c), "--output_dir", p["out"] + "-train", "--disable_tqdm"],
             message),
            ("hwlm-prepare", case, lambda p, c=case: [*data(p, c), "--output_dir", p["out"] + "-prepare"], message),
            ("hwlm-tokenizer", case, lambda p, c=case: [*data(p, c), "--output_dir", p["out"] + "-tok"], message),
            ("hwlm-gradflow", case, lambda p, c=case: ["--model", "hwlm_rnn:hidden_size=4", *data(p, c),
                                                       "--output_dir", p["out"] + "-gradflow"], message),
            ("hwlm-eval", case, lambda p, c=case: ["--model_name_or_path", p["model"], *data(p, c)], message),
        ]
    for case, message in MODEL_FOLDER_CASES:
        out += [
            ("hwlm-eval", case, lambda p, c=case: ["--model_name_or_path", p[c], *data(p, "train_file")], message),
            ("hwlm-generate", case, lambda p, c=case: ["--model_name_or_path", p[c]], message),
        ]
    out += [
        ("hwlm-eval", "mismatched tokenizer",
         lambda p: ["--model_name_or_path", p["mismatched"], *data(p, "train_file")], MISMATCH),
        ("hwlm-generate", "mismatched tokenizer", lambda p: ["--model_name_or_path", p["mismatched"]], MISMATCH),
        ("hwlm-push", "missing", lambda p: [p["missing"], "someone/x"], r"'.*missing.txt' is not a model folder"),
        ("hwlm-push", "a_file", lambda p: [p["a_file"], "someone/x"], r"FOLDER '.*a_file.txt' is a file"),
        ("hwlm-push", "a_dir", lambda p: [p["a_dir"], "someone/x"], r"'.*a_dir' is not a model folder: .* missing"),
        # bad flag values, refused when parsed
        ("hwlm-train", "bad value", lambda p: [*data(p, "train_file"), "--output_dir", p["out"] + "-t", "--bptt", "0"],
         r"--bptt must be an integer >= 1, got 0"),
        ("hwlm-eval", "bad value", lambda p: ["--model_name_or_path", p["model"], "--bptt", "0"],
         r"--bptt must be an integer >= 1, got 0"),
        ("hwlm-generate", "bad value", lambda p: ["--model_name_or_path", p["model"], "--max_new_tokens", "-1"],
         r"--max_new_tokens must be an integer >= 1, got -1"),
        ("hwlm-push", "bad value", lambda p: [p["model"], "someone/x", "--timeout", "0"],
         r"--timeout must be a positive number of seconds, got 0.0"),
        ("hwlm-gradflow", "bad value", lambda p: ["--model", "hwlm_rnn:hidden_size=4", "--sequence_length", "0"],
         r"--sequence_length must be an integer >= 1, got 0"),
        ("hwlm-tokenizer", "bad value", lambda p: [*data(p, "train_file"), "--vocab_size", "2",
                                                   "--output_dir", p["out"] + "-tok2"],
         r"vocab_size=2 is smaller than the 3 special tokens"),
        ("hwlm-prepare", "bad value", lambda p: ["--block_size", "many", "--output_dir", p["out"] + "-p2"],
         r"argument --block_size/--block-size: invalid int value: 'many' \(see hwlm-prepare --help\)"),
    ]
    return out


CASES = _cases()


def _last_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


@pytest.mark.parametrize("command,case,argv,message", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_user_error_is_one_line_and_exit_status_2(command, case, argv, message, inputs, capsys):
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(SystemExit) as exit_info:
        main(argv(inputs))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert re.fullmatch(rf"{command}: error: .*{message}.*", _last_error_line(err)), err[-2000:]
    assert "Traceback" not in err


def test_the_mismatch_message_names_both_sizes(inputs, capsys):
    from hwlm.cli.generate import main

    with pytest.raises(SystemExit):
        main(["--model_name_or_path", inputs["mismatched"]])
    entries, vocab = re.search(MISMATCH, capsys.readouterr().err).groups()
    assert int(entries) == inputs["tokenizer_size"] and int(vocab) == inputs["tokenizer_size"] // 2


@pytest.mark.parametrize("command", ["hwlm-eval", "hwlm-generate"])
def test_a_model_that_cannot_be_fetched_is_one_line_and_exit_status_2(command, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network in tests
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name_or_path", "nobody/no-such-model"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert re.fullmatch(rf"{command}: error: could not load \w+ 'nobody/no-such-model' \(OSError: .*\n", err)


# the real console entry, one case per command (a subprocess each: a few seconds)
SUBPROCESS_CASES = {
    "hwlm-train": "empty", "hwlm-eval": "mismatched tokenizer", "hwlm-generate": "bad value", "hwlm-push": "a_file",
    "hwlm-prepare": "latin1", "hwlm-tokenizer": "a_dir", "hwlm-gradflow": "missing",
}


def _case(command: str, case: str):
    return next(c for c in CASES if c[:2] == (command, case))


def _run_module(command: str, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", MODULES[command], *argv], capture_output=True, text=True,
                          env=env or ENV, timeout=180, cwd=REPO)


@pytest.mark.parametrize("command", list(SUBPROCESS_CASES))
def test_the_console_command_prints_one_line_and_exits_2(command, inputs):
    _, _, argv, message = _case(command, SUBPROCESS_CASES[command])
    proc = _run_module(command, argv(inputs))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.fullmatch(rf"{command}: error: .*{message}.*", _last_error_line(proc.stderr)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command,how", [("hwlm-eval", "env"), ("hwlm-push", "flag")])
def test_debug_shows_the_traceback(command, how, inputs):
    _, _, argv, message = _case(command, SUBPROCESS_CASES[command])
    env = {**ENV, "HWLM_DEBUG": "1"} if how == "env" else ENV
    proc = _run_module(command, argv(inputs) + (["--debug"] if how == "flag" else []), env=env)
    assert proc.returncode == 1  # Python's status for an uncaught exception
    assert "Traceback (most recent call last)" in proc.stderr
    assert re.search(rf"^[\w.]*Error: .*{message}", proc.stderr, flags=re.MULTILINE), proc.stderr[-2000:]
    assert f"{command}: error:" not in proc.stderr


@pytest.mark.parametrize("command", list(MODULES))
def test_debug_flag_lets_the_original_exception_through_in_process(command, inputs):
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(FileNotFoundError, match=r"--config '.*missing.txt' does not exist"):
        main(["--config", inputs["missing"], "--debug"])


# ------------------------------------------------------------------ --config presets, for every command


@pytest.mark.parametrize("command", list(MODULES))
@pytest.mark.parametrize("case,message", [
    ("missing", r"--config '.*missing.txt' does not exist; presets live in presets/\*.yaml"),
    ("a_dir", r"--config '.*a_dir' is a directory; pass a preset file \(presets/\*.yaml\)"),
    ("latin1", r"--config '.*latin1.txt' is not UTF-8 text \(byte 3\); save it as UTF-8"),
    ("empty", r"--config '.*empty.txt' must be a mapping of field: value, got NoneType \(an empty file\)"),
])
def test_a_bad_preset_is_one_line_for_every_command(command, case, message, inputs, capsys):
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", inputs[case]])
    assert exit_info.value.code == 2
    assert re.fullmatch(rf"{command}: error: {message}", _last_error_line(capsys.readouterr().err))


REQUIRED = {"hwlm-eval": ["--model_name_or_path", "m"], "hwlm-generate": ["--model_name_or_path", "m"],
            "hwlm-push": ["folder", "me/x"]}


@pytest.mark.parametrize("command", list(MODULES))
def test_an_unknown_flag_is_one_line_for_every_command(command, capsys):
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(SystemExit) as exit_info:
        main([*REQUIRED.get(command, []), "--no_such_flag", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"{command}: error: unrecognized arguments: --no_such_flag 1 (see {command} --help)\n"


def test_a_missing_required_argument_is_one_line(capsys):
    from hwlm.cli.push import main

    with pytest.raises(SystemExit) as exit_info:
        main(["folder"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "hwlm-push: error: the following arguments are required: REPO_ID (see hwlm-push --help)\n")


def test_a_preset_sets_any_commands_fields_and_flags_override_it(tmp_path):
    from hwlm.cli import evaluate, generate, push

    preset = tmp_path / "gen.json"
    preset.write_text(json.dumps({"model_name_or_path": "some/folder", "max_new_tokens": 5, "temperature": 0.5}))
    (gen,) = generate.parse(["--config", str(preset), "--max_new_tokens", "7"])
    assert (gen.model_name_or_path, gen.max_new_tokens, gen.temperature) == ("some/folder", 7, 0.5)
    (tmp_path / "push.yaml").write_text("timeout: 5\nmax_retries: 0\n")
    (args,) = push.parse([str(tmp_path / "model"), "me/x", "--config", str(tmp_path / "push.yaml"), "--timeout", "9"])
    assert (args.folder, args.repo_id, args.timeout, args.max_retries) == (str(tmp_path / "model"), "me/x", 9.0, 0)
    (tmp_path / "eval.yaml").write_text("model_name_or_path: m\nper_device_eval_batch_size: 4\nblock_size: 12\n")
    eval_args, data_args, *_ = evaluate.parse([str(tmp_path / "eval.yaml")])  # the lone-preset shorthand
    assert (eval_args.model_name_or_path, eval_args.per_device_eval_batch_size, data_args.block_size) == ("m", 4, 12)


def test_a_preset_with_an_unknown_field_is_refused(tmp_path):
    from hwlm.cli.generate import parse

    (tmp_path / "p.yaml").write_text("model_name_or_path: m\nmax_new_tokenz: 5\n")
    with pytest.raises(ValueError, match=r"has unknown field\(s\) \['max_new_tokenz'\]; see hwlm-generate --help"):
        parse(["--config", str(tmp_path / "p.yaml")])


def test_invalid_yaml_in_a_preset_is_a_value_error(tmp_path):
    from hwlm.cli.common import read_preset

    (tmp_path / "p.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=r"--config '.*p.yaml' is not valid YAML: "):
        read_preset(tmp_path / "p.yaml")


# ------------------------------------------------------------------ --help from the dataclasses


HELP_SAMPLES = {  # a dataclass section title and one field help of each command
    "hwlm-train": ("TrainingArguments:", "Window length in tokens for --batching streams."),
    "hwlm-eval": ("EvalArguments:", "Sliding window length; default max_position_embeddings."),
    "hwlm-generate": ("GenerateArguments:", "Keep the k most likely words (0: all)."),
    "hwlm-push": ("PushArguments:", "Further attempts after a timeout, lost connection or 5xx answer."),
    "hwlm-prepare": ("PrepareArguments:", "Where ``hwlm-prepare`` writes its folder."),
    "hwlm-tokenizer": ("TokenizerOutputArguments:", "Folder for the tokenizer files."),
    "hwlm-gradflow": ("GradflowArguments:", "T: positions in each measured sequence."),
}


@pytest.mark.parametrize("command", list(MODULES))
def test_help_shows_each_dataclass_and_its_field_help(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one help text per line, so it can be searched verbatim
    main = importlib.import_module(MODULES[command]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    title, help_text = HELP_SAMPLES[command]
    assert out.startswith(f"usage: {command} ")
    assert f"\n{title}\n" in out and help_text in out
    assert "--config CONFIG" in out and "--debug" in out


# ------------------------------------------------------------------ which errors are the user's


def _raises(exc: BaseException):
    def run(argv):
        raise exc
    return run


@pytest.mark.parametrize("exc,code", [
    (UserError("bad value"), 2), (FileNotFoundError("no file"), 2), (NotADirectoryError("a file"), 2),
    (IsADirectoryError("a folder"), 2), (PermissionError("read-only"), 2), (InvalidInput("hidden_size=-1"), 2),
])
def test_user_errors_exit_2_on_one_line(exc, code, capsys):
    from hwlm.cli.common import run_main

    with pytest.raises(SystemExit) as exit_info:
        run_main("hwlm-x", _raises(exc), [])
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwlm-x: error: ")


def test_hwlm_own_errors_are_user_errors(capsys):
    from hwlm.cli.common import run_main
    from hwlm.training.checkpoint import CheckpointError
    from hwlm.output_folders import OutputDirError

    for exc in (CheckpointError("stale checkpoint\nsecond line"), OutputDirError("not yours")):
        with pytest.raises(SystemExit) as exit_info:
            run_main("hwlm-x", _raises(exc), [])
        assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["hwlm-x: error: stale checkpoint second line",
                                                    "hwlm-x: error: not yours"]


def test_run_failures_exit_1_and_ctrl_c_exits_130(capsys):
    from hwlm.cli.common import run_main
    from hwlm.hub import HubUnreachable

    with pytest.raises(SystemExit) as exit_info:
        run_main("hwlm-push", _raises(HubUnreachable("the Hub did not answer")), [], failures=(HubUnreachable,))
    assert exit_info.value.code == 1
    with pytest.raises(SystemExit) as exit_info:
        run_main("hwlm-x", _raises(KeyboardInterrupt()), [])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["hwlm-push: error: the Hub did not answer", "hwlm-x: interrupted"]


@pytest.mark.parametrize("exc", [TypeError("bug"), AttributeError("bug"), KeyError("bug"), RuntimeError("bug"),
                                 ValueError("bug"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bug")])
def test_programming_errors_keep_their_traceback(exc, capsys):
    from hwlm.cli.common import run_main

    with pytest.raises(type(exc), match="bug"):
        run_main("hwlm-x", _raises(exc), [])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value,debug", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_hwlm_debug_values(value, debug, monkeypatch):
    from hwlm.cli.common import debug_requested

    monkeypatch.setenv("HWLM_DEBUG", value)
    assert debug_requested([]) is debug
    assert debug_requested(["--debug"]) is True


def test_cli_modules_do_not_import_each_other():
    for path in (REPO / "hwlm" / "cli").glob("*.py"):
        if path.name in ("__init__.py", "common.py"):
            continue
        imports = re.findall(r"^\s*(?:from|import) (hwlm\.cli\.\w+)", path.read_text(), flags=re.MULTILINE)
        assert set(imports) <= {"hwlm.cli.common"}, f"{path.name} imports {imports}"


def test_hwlm_train_runs_the_cross_field_checks_before_any_work(inputs, tmp_path, capsys):
    """hwlm-train refuses a setting that is wrong only in combination (--push_to_hub without --hub_model_id) with
    check_settings' own message, exit status 2, before the run writes anything."""
    from hwlm.cli.train import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*data(inputs, "train_file"), "--output_dir", str(out), "--push_to_hub"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("hwlm-train: error: --push_to_hub needs --hub_model_id")
    assert not out.exists()  # refused before the run wrote anything
