"""Commands answer ``--help`` and settings errors without importing torch or transformers' modeling code, and
``import hwlm`` stays cheap while still registering the Auto classes.

Each check runs in a fresh interpreter and reads ``sys.modules``: what was imported, never how long it took."""

import json
import subprocess
import sys
import textwrap

import pytest

#: module → (an argument list that is a settings or argument error, the message it must give)
COMMANDS = {
    "hwlm.cli.prepare": (["--block_size", "0"], "block_size=0 must be >= 1"),
    "hwlm.cli.train_tokenizer": (["--pre_tokenizer", "bogus"], "invalid choice: 'bogus'"),
    "hwlm.cli.train": (["--learning_rate", "-1"], "--learning_rate must be a positive number"),
    "hwlm.cli.evaluate": (["--model_name_or_path", "m", "--cache_lambda", "2"], "--cache_lambda must be in"),
    "hwlm.cli.generate": (["--model_name_or_path", "m", "--max_new_tokens", "0"], "--max_new_tokens must be"),
    "hwlm.cli.push": (["folder"], "the following arguments are required: REPO_ID"),
    "hwlm.cli.gradflow": (["--num_threads", "many"], "invalid int value: 'many'"),
    "hwlm.cli.course": (["--bogus_flag"], "unrecognized arguments: --bogus_flag"),
}
HEAVY = ("torch", "transformers.modeling_utils", "transformers.models.auto.configuration_auto", "datasets",
         "accelerate", "pyarrow", "numpy")

RUN_COMMAND = textwrap.dedent("""
    import importlib, json, sys
    module, argv = sys.argv[1], sys.argv[2:]
    try:
        importlib.import_module(module).main(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code
    print(json.dumps({"exit": code, "imported": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,))


def run_command(module, argv):
    done = subprocess.run([sys.executable, "-c", RUN_COMMAND, module, *argv], capture_output=True, text=True,
                          timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_imports_neither_torch_nor_transformers_modeling(module):
    report, _ = run_command(module, ["--help"])
    assert report == {"exit": 0, "imported": []}


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_settings_error_imports_neither_torch_nor_transformers_modeling(module):
    argv, message = COMMANDS[module]
    report, stderr = run_command(module, argv)
    assert report == {"exit": 2, "imported": []}
    assert message in stderr and stderr.count("\n") == 1  # one line: prog: error: message


@pytest.mark.parametrize("argv, message", [
    (["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
    (["--lr_scheduler_type", "plateau", "--lr_decay_factor", "0.5"], "would not lower the rate"),
    (["--config", "presets/no-such-preset.yaml"], "does not exist"),
    (["--model_type", "hwlm_gru"], "invalid choice: 'hwlm_gru'"),
    (["--config_overrides", "hiden_size=8"], "did you mean 'hidden_size'"),
])
def test_train_cross_field_errors_come_before_the_training_stack(argv, message):
    report, stderr = run_command("hwlm.cli.train", argv)
    assert report == {"exit": 2, "imported": []}
    assert message in stderr


def test_import_hwlm_is_lazy_and_registration_follows_transformers():
    code = textwrap.dedent("""
        import sys
        import hwlm
        lazy = not any(m in sys.modules for m in ("torch", "transformers.modeling_utils"))
        from transformers import AutoConfig
        config = AutoConfig.for_model("hwlm_lstm", vocab_size=16, hidden_size=8, num_hidden_layers=1)
        config_only = "transformers.modeling_utils" not in sys.modules
        from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification
        model = AutoModelForCausalLM.from_config(config)
        print(lazy, config_only, type(config).__name__, type(model).__name__,
              type(AutoModel.from_config(config)).__name__,
              AutoModelForSequenceClassification.from_config(config).__class__.__name__,
              hwlm.HwlmLstmForCausalLM is type(model), sorted(hwlm.MODEL_CLASSES))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == [
        "True", "True", "HwlmLstmConfig", "HwlmLstmForCausalLM", "HwlmLstmModel",
        "HwlmLstmForSequenceClassification", "True", "['hwlm_lstm',", "'hwlm_rnn',", "'hwlm_transformer']",
    ]


def test_registration_when_transformers_auto_classes_were_imported_first():
    code = textwrap.dedent("""
        from transformers import AutoConfig, AutoModelForCausalLM
        import hwlm
        config = AutoConfig.for_model("hwlm_rnn", vocab_size=16, hidden_size=8, num_hidden_layers=1)
        print(type(AutoModelForCausalLM.from_config(config)).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["HwlmRnnForCausalLM"]


def test_public_names_resolve():
    import hwlm
    import hwlm.models

    for name in hwlm.__all__:
        assert getattr(hwlm, name) is getattr(hwlm.models, name)
    assert set(hwlm.__all__) <= set(dir(hwlm))
    with pytest.raises(AttributeError, match="no attribute 'NotAModel'"):
        hwlm.NotAModel  # noqa: B018
