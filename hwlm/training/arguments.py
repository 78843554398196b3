"""Run settings: dataclasses with a help text per field, each checking itself, and the cross-field checks.

Three dataclasses describe a run: :class:`ModelArguments` (which model), ``hwlm.data.DataArguments``
(which corpus and tokenizer) and :class:`TrainingArguments` (how to train). Flag names follow
``run_clm_no_trainer.py`` where they overlap. The command line and presets (a YAML or JSON mapping of the same
field names, ``--config presets/NAME.yaml``) are parsed by `hwlm.cli.common.parse_command`, the parser every
``hwlm-*`` command shares; `check_settings` runs the checks that need several settings or the files they name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from hwlm.model_building import check_config_overrides, parse_config_overrides  # re-exported: they parse model settings
from hwlm.errors import UserError

__all__ = [
    "ModelArguments",
    "TrainingArguments",
    "parse_config_overrides",
    "merge_config_overrides",
    "check_config_overrides",
    "run_argument_classes",
    "check_settings",
    "check_output_dir",
]


@dataclass
class ModelArguments:
    """Which model to train."""

    model_type: Literal["hwlm_rnn", "hwlm_lstm", "hwlm_transformer"] = field(
        default="hwlm_lstm",
        metadata={"help": "The model family (ignored with --config_name; hwlm_rnn's cell, tanh, relu or gru, is "
                          "the config field cell_type)."},
    )
    config_name: Optional[str] = field(
        default=None, metadata={"help": "A config.json file or a folder holding one; overrides --model_type."}
    )
    config_overrides: Optional[str] = field(
        default=None,
        metadata={
            "help": "Config fields to set, 'hidden_size=200,num_hidden_layers=2,tie_word_embeddings=true' "
            "(values parsed as YAML). In a preset this may be a mapping. vocab_size always comes from the tokenizer."
        },
    )
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Start from the weights of this saved folder instead of a fresh model."}
    )


@dataclass
class TrainingArguments:
    """How to train: batching regime, optimisation, checkpoints, logging and publishing."""

    #: How ``hwlm-train --help`` groups these flags (as transformers' and litgpt's docs group theirs); every field is
    #: in exactly one section (tests/test_training_settings.py checks it).
    HELP_SECTIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "output, checkpoints and resume": ("output_dir", "overwrite_output_dir", "checkpointing_steps",
                                           "save_total_limit", "resume_from_checkpoint", "stop_after_steps"),
        "batches": ("prepared_data_dir", "batching", "bptt", "variable_bptt", "per_device_train_batch_size",
                    "gradient_accumulation_steps"),
        "optimiser": ("optimizer", "learning_rate", "momentum", "weight_decay", "adam_beta1", "adam_beta2",
                      "adam_epsilon", "max_grad_norm", "mixed_precision", "seed"),
        "schedule and length": ("lr_scheduler_type", "lr_decay_factor", "min_lr", "lr_decay_start_epoch",
                                "num_warmup_steps", "num_train_epochs", "max_train_steps"),
        "evaluation": ("per_device_eval_batch_size", "eval_stride", "eval_steps", "max_eval_tokens"),
        "logging and processes": ("logging_steps", "with_tracking", "report_to", "disable_tqdm", "ddp_timeout"),
        "publishing": ("push_to_hub", "hub_model_id", "hub_private_repo", "license"),
    }

    output_dir: str = field(default="outputs/run", metadata={"help": "Where the model folder, checkpoints and logs go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow --output_dir to hold another run (its files are replaced)."}
    )
    prepared_data_dir: Optional[str] = field(
        default=None,
        metadata={"help": "A folder written by hwlm-prepare. Without it the corpus is prepared from the data flags."},
    )
    batching: Literal["streams", "blocks"] = field(
        default="streams",
        metadata={
            "help": "streams: B parallel token streams read in bptt windows with the recurrent state carried "
            "(recurrent models); blocks: shuffled independent blocks of --block_size tokens (Transformer)."
        },
    )
    bptt: int = field(default=35, metadata={"help": "Window length in tokens for --batching streams."})
    variable_bptt: bool = field(
        default=False, metadata={"help": "AWD-LSTM variable window lengths around --bptt (streams only)."}
    )
    per_device_train_batch_size: int = field(
        default=20, metadata={"help": "Streams (or blocks) per process per micro-batch."}
    )
    per_device_eval_batch_size: int = field(
        default=10,
        metadata={
            "help": "Streams (or windows) per process at evaluation. Streamed evaluation with B streams restarts "
            "the state B times per split; 1 reproduces the literature's single-stream figure exactly."
        },
    )
    eval_stride: Optional[int] = field(
        default=None,
        metadata={
            "help": "Sliding-window evaluation (models without state carrying): window --block_size, each window "
            "scores only its last eval_stride tokens. Default: block_size // 2."
        },
    )
    optimizer: Literal["sgd", "adamw"] = field(default="sgd", metadata={"help": "Optimiser."})
    learning_rate: float = field(default=20.0, metadata={"help": "Initial learning rate."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum."})
    weight_decay: float = field(
        default=0.0, metadata={"help": "Weight decay (never on biases, norms or embeddings)."}
    )
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "plateau", "epoch_decay"] = (
        field(
            default="plateau",
            metadata={
                "help": "plateau: divide lr by --lr_decay_factor when validation does not improve; epoch_decay: "
                "divide it each epoch after --lr_decay_start_epoch epochs (Zaremba et al.); linear/cosine/"
                "constant(_with_warmup): transformers.get_scheduler with --num_warmup_steps."
            },
        )
    )
    lr_decay_factor: float = field(default=4.0, metadata={"help": "Divisor of plateau and epoch_decay schedules."})
    min_lr: float = field(
        default=1e-6,
        metadata={"help": "plateau: the rate is never divided below this (0: no floor). Without one, a run that "
                  "stops improving keeps dividing (to 1e-169 and beyond) and trains nothing."},
    )
    lr_decay_start_epoch: int = field(
        default=4, metadata={"help": "epoch_decay: number of epochs at the initial learning rate."}
    )
    num_warmup_steps: int = field(default=0, metadata={"help": "Linear warmup steps (transformers schedules)."})
    max_grad_norm: float = field(default=0.25, metadata={"help": "Clip the global gradient norm (0 disables)."})
    num_train_epochs: int = field(default=1, metadata={"help": "Epochs to train."})
    max_train_steps: Optional[int] = field(
        default=None, metadata={"help": "Stop after this many optimiser steps (overrides --num_train_epochs)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches (consecutive windows in streams mode) per optimiser step."}
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = field(
        default="no", metadata={"help": "Mixed precision through accelerate."}
    )
    seed: int = field(default=1111, metadata={"help": "Seed for weights, dropout and data order."})
    checkpointing_steps: Optional[str] = field(
        default="epoch",
        metadata={"help": "Save a checkpoint every N optimiser steps ('100'), at each epoch end ('epoch'), or 'no'."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last K checkpoints (the best model is kept apart)."})
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest one under --output_dir."}
    )
    eval_steps: Optional[int] = field(
        default=None, metadata={"help": "Also evaluate every N optimiser steps (always at each epoch end)."}
    )
    max_eval_tokens: Optional[int] = field(
        default=None, metadata={"help": "Score only the first N tokens of validation during training (speed)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Write a metrics line every N optimiser steps."})
    ddp_timeout: int = field(
        default=1800,
        metadata={"help": "Seconds a process waits for the others (start-up, then every collective) before the run "
                  "fails, as transformers' ddp_timeout. On several machines, a machine that fails before start-up "
                  "ends the others after this long: lower it (e.g. 120) when no step waits that long."},
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log to accelerate trackers (see --report_to)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Tracker(s) for --with_tracking: tensorboard, trackio, all."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bar."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the output folder to the Hub at the end."})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repo id, e.g. user/hwlm-ptb-lstm."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    license: str = field(default="apache-2.0", metadata={"help": "License written in the model card."})
    stop_after_steps: Optional[int] = field(
        default=None,
        metadata={
            "help": "Testing aid: behave as if SIGINT arrived after N optimiser steps (save a checkpoint and exit)."
        },
    )

    def __post_init__(self):
        # Checked here, when the settings are made, so a bad value fails before any data or model is built
        # and on every process alike (litgpt's pattern).
        _check_counts(self, minimum=1, names=(
            "bptt", "per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs",
            "gradient_accumulation_steps", "logging_steps", "save_total_limit", "max_train_steps", "eval_steps",
            "eval_stride", "stop_after_steps", "ddp_timeout"))
        _check_counts(self, minimum=0, names=("num_warmup_steps", "lr_decay_start_epoch"))
        _check_counts(self, minimum=2, names=("max_eval_tokens",))
        for name in ("learning_rate", "lr_decay_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"--{name} must be a positive number, got {value!r}")
        for name in ("max_grad_norm", "momentum", "weight_decay", "min_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UserError(f"--{name} must be a number >= 0 (0 disables it), got {value!r}")
        if self.min_lr > self.learning_rate:
            raise UserError(f"--min_lr {self.min_lr} is above --learning_rate {self.learning_rate}; use a smaller "
                             "--min_lr (the floor the plateau schedule never goes below)")
        steps = self.checkpointing_steps
        if steps not in (None, "no", "epoch") and not (str(steps).isdigit() and int(steps) > 0):
            raise UserError(f"--checkpointing_steps must be a positive integer, 'epoch' or 'no', got {steps!r}")

    @property
    def checkpoint_every_steps(self) -> int | None:
        """``--checkpointing_steps`` as a number of optimiser steps; None for ``epoch`` or ``no``."""
        steps = self.checkpointing_steps
        return None if steps in (None, "no", "epoch") else int(steps)

    @property
    def checkpoint_each_epoch(self) -> bool:
        """True when ``--checkpointing_steps epoch``: a checkpoint at every epoch's end."""
        return self.checkpointing_steps == "epoch"


def _check_counts(obj, *, minimum: int, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the flag when an integer setting (None allowed) is below ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"--{name} must be an integer >= {minimum}, got {value!r}")


def run_argument_classes() -> tuple[type, ...]:
    """The dataclasses of a training run, in the order ``hwlm-train`` parses them (see `hwlm.cli.train.parse`)."""
    from hwlm.settings import DataArguments

    return (ModelArguments, DataArguments, TrainingArguments)


def merge_config_overrides(base: str | dict | None, update: str | dict | None) -> str | None:
    """``base`` (a preset's mapping) updated by ``update`` (the command line's), as one ``'k=v,...'`` string.

    Values are written as JSON, which parses back to the same value as YAML.
    """
    merged = {**parse_config_overrides(base), **parse_config_overrides(update)}
    return ",".join(f"{k}={json.dumps(v)}" for k, v in merged.items()) or None


def check_output_dir(args) -> None:
    """Refuse an ``--output_dir`` hwlm-train may not write into (see `hwlm.output_folders`); writes nothing."""
    from hwlm.output_folders import check_output_dir as check_folder
    from hwlm.training.run import RUN_FILE, TRAIN_WRITES

    check_folder(
        args.output_dir, command="hwlm-train", marker=RUN_FILE, would_write=TRAIN_WRITES,
        overwrite=args.overwrite_output_dir, resume=bool(args.resume_from_checkpoint),
    )


def _check_data_sources(data_args, args) -> None:
    """The data the run reads exists: a prepared folder, or the local files named."""
    if args.prepared_data_dir:
        folder = Path(args.prepared_data_dir)
        if not (folder / "hwlm_data.json").is_file():
            raise FileNotFoundError(
                f"--prepared_data_dir {str(folder)!r} is not a prepared data folder (no hwlm_data.json); create it "
                f"with hwlm-prepare --output_dir {folder}, or drop --prepared_data_dir to prepare the data now."
            )
        return
    for flag in ("train_file", "validation_file", "test_file"):
        name = getattr(data_args, flag, None)
        if name and not Path(name).is_file():
            raise FileNotFoundError(f"--{flag} {name!r} does not exist (or is not a file); check the path.")


def _check_model_fits_run(model_args, data_args, args) -> None:
    """The model the settings name can be trained the way they ask (state carrying, block length)."""
    from hwlm.model_building import check_fits, check_model_settings, resolve_config, skeleton_model, \
        supports_state_carrying

    from hwlm.model_sizes import check_model_size

    check_model_settings(model_args)
    config = resolve_config(model_args)
    check_model_size(config)  # before building even the skeleton: 10**6 layers would take minutes
    model = skeleton_model(config)  # on the meta device: no memory, no compute
    blocks = args.batching == "blocks"
    check_fits(config, block_size=data_args.block_size if blocks else None, batching=args.batching, model=model)
    stride = args.eval_stride
    if not supports_state_carrying(model) and stride is not None and stride > data_args.block_size:
        raise UserError(
            f"--eval_stride {stride} is above --block_size {data_args.block_size}, the sliding window it advances "
            f"in; use an --eval_stride between 1 and {data_args.block_size}."
        )


def check_settings(model_args, data_args, args) -> None:
    """Every cross-field check of a training run, before any data is read and before the Accelerator exists.

    Each dataclass checks its own fields in ``__post_init__``; this checks how they fit together. It runs on
    every process alike and needs no other process, so a user error ends a multi-process run on every rank
    at once instead of leaving the other ranks waiting for a rank that raised.

    Raises:
        ValueError: ``--push_to_hub`` without ``--hub_model_id``; ``--lr_scheduler_type plateau`` with
            ``--lr_decay_factor`` <= 1; a config override the model does not define; ``--batching streams``
            for a model that cannot carry state; ``--block_size`` above the model's positions; an
            ``--eval_stride`` longer than the window; an ``--output_dir`` hwlm-train may not write into.
        FileNotFoundError: ``--prepared_data_dir`` or a data file that does not exist.
    """
    if args.push_to_hub and not args.hub_model_id:
        raise UserError("--push_to_hub needs --hub_model_id (e.g. your-name/hwlm-ptb-lstm)")
    if args.lr_scheduler_type == "plateau" and args.lr_decay_factor <= 1:
        raise UserError(
            f"--lr_decay_factor {args.lr_decay_factor} with --lr_scheduler_type plateau would not lower the rate "
            "(the rate is divided by the factor); use a factor > 1, or --lr_scheduler_type constant."
        )
    check_output_dir(args)
    _check_data_sources(data_args, args)
    _check_model_fits_run(model_args, data_args, args)
