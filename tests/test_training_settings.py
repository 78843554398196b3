"""Issue 10: every cross-field setting is checked by `check_settings`, before any data is read and before the
Accelerator exists (the two-process form of the same guarantee is in test_reliability_multiprocess.py)."""

from __future__ import annotations

import pytest

from _toy import TINY_LSTM, TINY_TRANSFORMER, lstm_flags, prepare_toy
from hwlm.cli.train import parse as parse_args
from hwlm.training.arguments import check_settings


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_toy(tmp_path_factory.mktemp("toy"))


def settings(prepared, tmp_path, *extra):
    return parse_args(lstm_flags(prepared, tmp_path / "out", *extra))


TRANSFORMER = ("--model_type", "hwlm_transformer", "--config_overrides", TINY_TRANSFORMER)

CASES = {
    "push without repo": ((
        "--push_to_hub",), r"--push_to_hub needs --hub_model_id"),
    "plateau that never lowers": ((
        "--lr_scheduler_type", "plateau", "--lr_decay_factor", "1"), r"--lr_decay_factor 1.0 .* use a factor > 1"),
    "misspelt config key": ((
        "--config_overrides", TINY_LSTM + ",hiden_size=8"), r"'hiden_size' is not a field .*did you mean 'hidden_size'"),
    "streams for a stateless model": (
        TRANSFORMER, r"HwlmTransformerForCausalLM does not carry state .* --batching blocks"),
    "block longer than positions": ((
        *TRANSFORMER, "--batching", "blocks", "--block_size", "64"), r"--block_size 64 is above .*=32"),
    "stride longer than window": ((
        *TRANSFORMER, "--batching", "blocks", "--block_size", "16", "--eval_stride", "20"),
        r"--eval_stride 20 is above --block_size 16"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cross_field_errors_name_the_flags_and_the_fix(prepared, tmp_path, case):
    flags, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        check_settings(*settings(prepared, tmp_path, *flags))


def test_missing_data_is_refused_before_reading_it(prepared, tmp_path):
    model_args, data_args, args = settings(prepared, tmp_path)
    args.prepared_data_dir = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"--prepared_data_dir .*nowhere' is not a prepared data folder"):
        check_settings(model_args, data_args, args)
    args.prepared_data_dir = None
    data_args.train_file = str(tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"--train_file .*missing.txt' does not exist"):
        check_settings(model_args, data_args, args)


def test_good_settings_pass_for_both_regimes(prepared, tmp_path):
    streams = ()  # an LSTM reading streams
    blocks = (*TRANSFORMER, "--batching", "blocks", "--block_size", "16")  # a Transformer reading blocks
    for flags in (streams, blocks):
        assert check_settings(*settings(prepared, tmp_path, *flags)) is None
        assert not (tmp_path / "out").exists()  # checking writes nothing
    # The same call refuses each regime's nearest bad neighbour: the checks ran, they were not skipped.
    with pytest.raises(ValueError, match="does not carry state"):
        check_settings(*settings(prepared, tmp_path, *TRANSFORMER))
    with pytest.raises(ValueError, match="--block_size 64 is above"):
        check_settings(*settings(prepared, tmp_path, *blocks[:-1], "64"))


def test_train_checks_settings_before_the_accelerator_exists(prepared, tmp_path, monkeypatch):
    import accelerate

    from hwlm.training.loop import train

    built = []

    class Recording(accelerate.Accelerator):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(accelerate, "Accelerator", Recording)
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        train(*settings(prepared, tmp_path, "--push_to_hub"))
    assert built == [] and not (tmp_path / "out").exists()  # no process group, no folder claimed
    # the recording class is the one train() builds: a good run constructs it exactly once
    train(*settings(prepared, tmp_path, "--max_train_steps", "1", "--disable_tqdm"))
    assert built == [1]


@pytest.mark.parametrize("value, every, each_epoch", [("100", 100, False), ("epoch", None, True), ("no", None, False)])
def test_checkpointing_steps_reads_as_typed_settings(prepared, tmp_path, value, every, each_epoch):
    args = settings(prepared, tmp_path, "--checkpointing_steps", value)[2]
    assert (args.checkpoint_every_steps, args.checkpoint_each_epoch) == (every, each_epoch)


def test_help_groups_every_training_flag_in_exactly_one_section(capsys):
    import dataclasses

    from hwlm.training.arguments import TrainingArguments

    sections = TrainingArguments.HELP_SECTIONS
    listed = [name for names in sections.values() for name in names]
    assert sorted(listed) == sorted(f.name for f in dataclasses.fields(TrainingArguments))  # each once, none left out
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    positions = [text.index(f"TrainingArguments: {title}:") for title in sections]
    assert positions == sorted(positions)
    for title, names in sections.items():  # each flag is printed under its own section's title
        start = text.index(f"TrainingArguments: {title}:")
        following = [p for p in positions if p > start]
        block = text[start : following[0] if following else len(text)]
        assert all(f"--{name}" in block for name in names), title


def test_an_unknown_model_type_is_refused(prepared, tmp_path):
    """By the parser, naming the families (no transformers import needed); by the library for settings built in
    Python."""
    from hwlm.cli.common import UsageError

    with pytest.raises(UsageError, match=r"invalid choice: 'hwlm_gru' \(choose from 'hwlm_rnn', 'hwlm_lstm', 'hwlm_transformer'\)"):
        settings(prepared, tmp_path, "--model_type", "hwlm_gru")
    model_args, data_args, args = settings(prepared, tmp_path)
    model_args.model_type, model_args.config_overrides = "hwlm_gru", "hidden_size=8"
    with pytest.raises(ValueError, match=r"--model_type 'hwlm_gru' is not registered"):
        check_settings(model_args, data_args, args)


@pytest.mark.parametrize("model_type", ["hwlm_rnn", "hwlm_lstm", "hwlm_transformer"])
def test_declared_config_fields_are_the_fields_hwlms_classes_declare(model_type):
    """Read from the source without importing it, equal to the annotations of hwlm's classes in the real config's
    MRO, and all of them dataclass fields of that config."""
    import dataclasses

    from transformers import CONFIG_MAPPING

    import hwlm  # noqa: F401
    from hwlm.model_building import declared_config_fields

    config_class = CONFIG_MAPPING[model_type]
    ours = {name for cls in config_class.__mro__ if cls.__module__.startswith("hwlm.")
            for name in vars(cls).get("__annotations__", {})}
    assert declared_config_fields(model_type) == ours
    assert ours <= {f.name for f in dataclasses.fields(config_class)}
    assert declared_config_fields("gpt2") is None
