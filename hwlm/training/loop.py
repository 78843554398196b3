"""The training loop: ``setup`` -> ``fit`` (train, validate, checkpoint) -> ``finish`` (best model folder).

One loop for every model. What differs between regimes comes from the run settings, never from the
model type: with ``batching="streams"`` the loop feeds consecutive windows of B parallel streams and
carries ``outputs.cache`` from one window to the next (detached: truncated BPTT); with
``batching="blocks"`` it feeds shuffled independent blocks with ``labels``.

Reproducibility: weights, dropout and data order come from ``--seed``; the loaders are functions of
``(seed, epoch, position)``; checkpoints hold the model, optimiser, schedule, RNG states (accelerate)
and this loop's own state (step, position in the epoch, the carried recurrent state, best loss,
curves), so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from hwlm.evaluation import evaluate_perplexity, supports_state_carrying
from hwlm.training.arguments import check_config_overrides, parse_config_overrides
from hwlm.training.checkpoint import (
    find_latest_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from hwlm.training.outputs import tracked_writes
from hwlm.training.resume import check_resume_settings, read_checkpoint_state, truncate_metrics
from hwlm.training.session import (
    BEST_RECORD,
    USELESS_LOSS_FACTOR,
    check_launch,
    claim_output_dir,
    is_useless_loss,
    next_branch,
    process_table,
    restore_state,
    set_aside_future_best,
    state_writer,
)
from hwlm.training.loaders import BlockLoader, StreamLoader
from hwlm.training.outputs import check_output_dir as check_folder
from hwlm.training.optim import create_optimizer, create_scheduler

__all__ = ["train", "TrainingDiverged", "TrainerState", "check_output_dir", "build_model", "RUN_FILE"]

RUN_FILE = "hwlm_run.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_DIR = "best_model"
# resume changes that leave the trajectory as it was (a replay rewrites best_model identically)
MUTABLE_WITHOUT_EFFECT = ("logging_steps", "disable_tqdm", "with_tracking", "report_to", "stop_after_steps",
                          "push_to_hub", "hub_model_id", "hub_private_repo", "license", "save_total_limit",
                          "checkpointing_steps", "preprocessing_num_workers", "overwrite_cache")


class TrainingDiverged(RuntimeError):
    """The loss (or the weights) became NaN or infinite."""


@dataclass
class TrainerState:
    """What the loop needs, beyond accelerate's state, to continue a run exactly (saved in checkpoints)."""

    global_step: int = 0
    epoch: int = 0
    next_window: int = 0  # first micro-batch of ``epoch`` not yet trained on
    best_valid_loss: float = float("inf")
    best_step: int = -1
    train_curve: list = field(default_factory=list)  # [step, loss]
    valid_curve: list = field(default_factory=list)  # [step, perplexity]
    carried: Any = None  # the model's carried state (recurrent state, segment memory) at the checkpoint

    def state_dict(self) -> dict:
        """Everything but ``carried`` (saved per process as safetensors), as JSON-able values."""
        return {k: v for k, v in asdict(self).items() if k != "carried"}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key != "carried":
                setattr(self, key, value)


# ----------------------------------------------------------------------------------------- setup


# top-level names hwlm-train writes (model code files are recorded as they appear)
TRAIN_WRITES = (
    RUN_FILE, "checkpoints", BEST_DIR, METRICS_FILE, "all_results.json", CURVES_FILE, "README.md", "config.json",
    "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json",
)


def check_output_dir(args) -> None:
    """Refuse an ``--output_dir`` hwlm-train may not write into (see `hwlm.training.outputs`); writes nothing."""
    check_folder(
        args.output_dir, command="hwlm-train", marker=RUN_FILE, would_write=TRAIN_WRITES,
        overwrite=args.overwrite_output_dir, resume=bool(args.resume_from_checkpoint),
    )


def build_model(model_args, tokenizer, *, block_size: int | None = None, batching: str = "streams"):
    """Create the model: from ``--model_name_or_path`` weights, a ``--config_name`` or ``--model_type`` + overrides.

    ``vocab_size`` of a fresh model comes from the tokenizer. Raises ``ValueError`` when the tokenizer's
    ids do not fit the model's ``vocab_size``, when ``block_size`` exceeds ``max_position_embeddings``,
    or when ``batching="streams"`` is asked of a model that cannot carry state.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers the Auto classes)

    overrides = parse_config_overrides(model_args.config_overrides)
    specials = {
        k: getattr(tokenizer, k)
        for k in ("pad_token_id", "eos_token_id", "bos_token_id")
        if getattr(tokenizer, k, None) is not None
    }
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    elif model_args.config_name:
        config = AutoConfig.from_pretrained(model_args.config_name, **overrides)
    else:
        config = AutoConfig.for_model(model_args.model_type, **{"vocab_size": len(tokenizer), **specials, **overrides})
    if config.vocab_size < len(tokenizer):
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}: ids >= "
            f"{config.vocab_size} would index past the embedding. Use the tokenizer the model was built for, or a "
            f"config with vocab_size >= {len(tokenizer)} (a fresh model takes vocab_size from the tokenizer)."
        )
    max_pos = getattr(config, "max_position_embeddings", None)
    if block_size is not None and max_pos is not None and block_size > max_pos:
        raise ValueError(
            f"--block_size {block_size} is above the model's max_position_embeddings={max_pos}; lower --block_size "
            f"to at most {max_pos} or raise max_position_embeddings (--config_overrides max_position_embeddings=...)."
        )
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    else:
        model = AutoModelForCausalLM.from_config(config)
    # generate() stops at the end of a line and pads with <pad> unless told otherwise
    for key in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, key, None) is not None:
            setattr(model.generation_config, key, getattr(tokenizer, key))
    if batching == "streams" and not supports_state_carrying(model):
        raise ValueError(
            f"--batching streams carries the recurrent state across windows, but {type(model).__name__} does not "
            "carry state (supports_state_carrying is False). Use --batching blocks for this model."
        )
    return model


def load_training_data(data_args, args, accelerator):
    """Return ``(tokenizer, prepared)``: a folder from ``hwlm-prepare`` or the corpus prepared now."""
    from hwlm import data as hdata
    from hwlm.tokenization import load_tokenizer

    if args.prepared_data_dir:
        tok_dir = data_args.tokenizer_name or str(Path(args.prepared_data_dir) / "tokenizer")
        tokenizer = load_tokenizer(tok_dir)
        prepared = hdata.load_prepared(args.prepared_data_dir, tokenizer=tokenizer)
        return tokenizer, prepared
    with accelerator.main_process_first():
        corpus = hdata.load_corpus(data_args)
        tokenizer = hdata.resolve_tokenizer(data_args, corpus)
        prepared = hdata.prepare_datasets(
            corpus,
            tokenizer,
            block_size=data_args.block_size,
            num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
        )
    return tokenizer, prepared


# ----------------------------------------------------------------------------------------- helpers


class _StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between optimiser steps."""

    def __init__(self):
        self.requested = False
        self.signal_name = None
        self.signum = 0  # 0: not a signal (--stop_after_steps)

    def __call__(self, signum, frame):
        self.requested = True
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name


@contextmanager
def _catch_signals(flag: _StopFlag):
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _any_across(accelerator, value: bool) -> bool:
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([1.0 if value else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0)


def _write_metrics(out: Path, record: dict) -> None:
    with open(out / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def plot_curves(state: TrainerState, path: Path) -> None:
    """Write train and validation perplexity against the optimiser step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if state.train_curve:
        steps, losses = zip(*state.train_curve)
        ax.plot(steps, [math.exp(min(x, 50)) for x in losses], label="train")
    if state.valid_curve:
        steps, ppl = zip(*state.valid_curve)
        ax.plot(steps, ppl, marker="o", label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _settings(*arg_objs) -> dict:
    flat = {}
    for obj in arg_objs:
        for k, v in asdict(obj).items():
            flat[k] = v
    return flat


# ----------------------------------------------------------------------------------------- train


def train(model_args, data_args, args, command: str | None = None) -> dict[str, Any]:
    """Run a training job end to end and return its results (also written to ``all_results.json``).

    A run stopped by SIGINT/SIGTERM returns ``{"interrupted": True, ..., "exit_code": 128 + signal}`` after
    saving a checkpoint. The output folder is locked while the run writes, and the process group is
    destroyed at the end of every run, whatever way it ends.

    Raises:
        ValueError: bad settings or inputs, a folder hwlm may not write into, a resume that changes the model,
            batch layout or data (all checked before any compute).
        CheckpointError: ``--resume_from_checkpoint`` names a partial, corrupt or unsafe checkpoint.
        TrainingDiverged: the loss became NaN/inf or uselessly large (the last good checkpoint is kept).
    """
    from accelerate import Accelerator

    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.output_dir)
    check_output_dir(args)
    check_model_settings(model_args)
    resume_path = (
        resolve_checkpoint(args.resume_from_checkpoint, out, deep=True) if args.resume_from_checkpoint else None
    )
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=(args.report_to if args.with_tracking else None),
        project_dir=str(out),
    )
    lock = None
    try:
        check_launch(accelerator)
        settings = {**_settings(model_args, data_args, args), "num_processes": accelerator.num_processes}
        saved = read_checkpoint_state(resume_path) if resume_path else None
        changes = (
            check_resume_settings(saved["settings"], settings, {f.name for f in fields(data_args)}, resume_path)
            if saved else {}
        )
        payload = ({"command": command, "settings": settings} if saved is None
                   else {"last_resume": {"command": command, "from": str(resume_path), "changed": changes}})
        payload["processes"] = process_table(accelerator)  # one entry per rank: proof of what actually ran
        lock = claim_output_dir(accelerator, args, marker=RUN_FILE, writes=TRAIN_WRITES, check=check_output_dir,
                                resume=saved is not None, payload=payload)
        with tracked_writes(out, RUN_FILE) if accelerator.is_main_process else nullcontext():
            return _fit(accelerator, model_args, data_args, args, command, settings, resume_path, saved, changes)
    finally:
        if lock is not None:
            lock.release()
        accelerator.end_training()  # destroys the process group: no rank is left waiting at exit


def check_model_settings(model_args) -> None:
    """Refuse config override keys the model's config class does not define (before any compute)."""
    from transformers import CONFIG_MAPPING, AutoConfig

    import hwlm  # noqa: F401  (registers the Auto classes)

    overrides = parse_config_overrides(model_args.config_overrides)
    if not overrides:
        return
    if model_args.model_name_or_path or model_args.config_name:
        config_class = type(AutoConfig.from_pretrained(model_args.model_name_or_path or model_args.config_name))
    else:
        if model_args.model_type not in CONFIG_MAPPING:
            raise ValueError(f"--model_type {model_args.model_type!r} is not registered; use one of "
                             "hwlm_rnn, hwlm_lstm, hwlm_transformer")
        config_class = CONFIG_MAPPING[model_args.model_type]
    check_config_overrides(overrides, config_class)


def _fit(accelerator, model_args, data_args, args, command, settings, resume_path, saved, changes) -> dict[str, Any]:
    """Build data, model and optimiser, train (resuming if asked), then `finish`."""
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    out = Path(args.output_dir)
    set_seed(args.seed)

    tokenizer, prepared = load_training_data(data_args, args, accelerator)
    block_size = data_args.block_size if args.batching == "blocks" else None
    model = build_model(model_args, tokenizer, block_size=block_size, batching=args.batching)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    P, rank = accelerator.num_processes, accelerator.process_index
    if args.batching == "streams":
        loader = StreamLoader(
            prepared.stream_tensor("train"),
            batch_size=args.per_device_train_batch_size,
            bptt=args.bptt,
            num_processes=P,
            process_index=rank,
            variable_length=args.variable_bptt,
            seed=args.seed,
        )
    else:
        loader = BlockLoader(
            prepared.block_tensor("train"),  # (num_blocks, block_size): a view of the memory-mapped stream
            None,  # labels are the inputs (the model shifts them)
            batch_size=args.per_device_train_batch_size,
            num_processes=P,
            process_index=rank,
            seed=args.seed,
        )
    valid_tokens = prepared.stream_tensor("validation")
    if args.max_eval_tokens:
        valid_tokens = valid_tokens[: args.max_eval_tokens]

    accum = args.gradient_accumulation_steps
    steps_per_epoch = max(math.ceil(len(loader) / accum), 1)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)

    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, num_training_steps=max_steps)
    state = TrainerState()
    model, optimizer = accelerator.prepare(model, optimizer)
    # hwlm's state and the schedule are saved as JSON by state_writer, never registered with accelerate:
    # accelerate loads registered objects with weights_only=False, i.e. it would run code from a crafted file
    branch = 0
    if resume_path is not None:
        branch = _resume(accelerator, optimizer, scheduler, state, args, resume_path, saved, changes)
    if args.with_tracking:
        accelerator.init_trackers(
            "hwlm", config={k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}
        )

    stop = _StopFlag()
    stopped_early = False
    last_ckpt = find_latest_checkpoint(out)
    unwrapped = accelerator.unwrap_model(model)
    vocab_size = unwrapped.config.vocab_size
    every = int(args.checkpointing_steps) if str(args.checkpointing_steps).isdigit() else None

    def checkpoint() -> None:
        nonlocal last_ckpt
        if not _all_finite(unwrapped):
            raise TrainingDiverged(
                f"the weights became NaN or infinite at step {state.global_step}; not saving them. The last good "
                f"checkpoint is {last_ckpt}. Lower --learning_rate or --max_grad_norm."
            )
        last_ckpt = save_checkpoint(
            accelerator, out, state.global_step, {"epoch": state.epoch, "next_window": state.next_window},
            keep_last=args.save_total_limit, branch=branch,
            write_extra=state_writer(accelerator, state, scheduler, settings),
        )

    def validate() -> dict:
        res = evaluate_perplexity(
            model, valid_tokens, accelerator=accelerator, batch_size=args.per_device_eval_batch_size,
            bptt=args.bptt, window=data_args.block_size, stride=args.eval_stride, pad_token_id=pad_id,
        )
        if _any_across(accelerator, is_useless_loss(res["loss"], vocab_size)):
            raise TrainingDiverged(
                f"the validation loss is {res['loss']:.4g} at step {state.global_step}, above "
                f"{USELESS_LOSS_FACTOR:g} x ln(vocab_size={vocab_size}) = {USELESS_LOSS_FACTOR * math.log(vocab_size):.1f}: "
                f"the run diverged. The last good checkpoint is {last_ckpt}. Lower --learning_rate (a resumed run "
                "takes the new rate) or --max_grad_norm."
            )
        scheduler.on_evaluate(res["loss"])
        state.valid_curve.append([state.global_step, res["perplexity"]])
        if res["loss"] < state.best_valid_loss:
            state.best_valid_loss, state.best_step = res["loss"], state.global_step
            if accelerator.is_main_process:
                unwrapped.save_pretrained(out / BEST_DIR)
                (out / BEST_DIR / BEST_RECORD).write_text(json.dumps({"step": state.global_step, "branch": branch}))
            accelerator.wait_for_everyone()
        record = {"type": "eval", "split": "validation", "step": state.global_step, "epoch": state.epoch,
                  "loss": res["loss"], "perplexity": res["perplexity"], "lr": scheduler.get_last_lr()[0]}
        if accelerator.is_main_process:
            _write_metrics(out, record)
            plot_curves(state, out / CURVES_FILE)
            tqdm.write(f"step {state.global_step}: validation ppl {res['perplexity']:.2f}")
        if args.with_tracking:
            accelerator.log({"valid/loss": res["loss"], "valid/perplexity": res["perplexity"]}, step=state.global_step)
        return res

    progress = tqdm(
        total=max_steps, initial=state.global_step, disable=not accelerator.is_local_main_process or args.disable_tqdm,
        desc="train", dynamic_ncols=True,
    )
    model.train()
    with _catch_signals(stop):
        while state.global_step < max_steps and state.epoch < num_epochs:
            loader.set_epoch(state.epoch)
            scheduler.set_epoch(state.epoch)
            n_windows = len(loader)
            cache = state.carried if state.next_window > 0 and args.batching == "streams" else None
            batches = loader.iter_windows(state.next_window) if args.batching == "streams" else loader.iter_batches(state.next_window)
            window_log = {"loss": 0.0, "tokens": 0, "t0": time.perf_counter()}
            group: list = []
            for batch in batches:
                group.append(batch)
                idx = batch.index if args.batching == "streams" else batch["index"]
                if len(group) < accum and idx < n_windows - 1:
                    continue
                # one optimiser step over the micro-batches in ``group``
                loss_sum, tokens, finite = 0.0, 0, True
                for i, mb in enumerate(group):
                    sync = i == len(group) - 1
                    with nullcontext() if sync or P == 1 else accelerator.no_sync(model):
                        if args.batching == "streams":
                            outputs = model(
                                input_ids=mb.input_ids.to(accelerator.device),
                                shift_labels=mb.shift_labels.to(accelerator.device),
                                cache=cache,
                                use_cache=True,
                            )
                            cache = outputs.cache.detach()  # truncated BPTT
                            n = mb.num_tokens
                        else:
                            outputs = model(
                                input_ids=mb["input_ids"].to(accelerator.device), labels=mb["labels"].to(accelerator.device)
                            )
                            n = int((mb["labels"][:, 1:] != -100).sum())
                        loss = outputs.loss
                        del outputs  # the logits (tokens x vocabulary) need not stay alive through backward
                        finite = finite and bool(torch.isfinite(loss.detach()))
                        accelerator.backward(loss / len(group))
                    loss_sum += float(loss.detach()) * n
                    tokens += n
                step_no = state.global_step + 1
                step_loss = loss_sum / max(tokens, 1) if finite else float("nan")
                if _any_across(accelerator, is_useless_loss(step_loss, vocab_size)):
                    progress.close()
                    what = ("became NaN or infinite" if not math.isfinite(step_loss) else
                            f"reached {step_loss:.4g}, above {USELESS_LOSS_FACTOR:g} x ln(vocab_size={vocab_size})")
                    raise TrainingDiverged(
                        f"the training loss {what} at step {step_no} (epoch {state.epoch}, "
                        f"micro-batch {idx}); stopping. The last good checkpoint is {last_ckpt}. Lower "
                        "--learning_rate (a resumed run takes the new rate), set --max_grad_norm, or use "
                        "--mixed_precision no."
                    )
                if args.max_grad_norm and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                group = []
                state.global_step = step_no
                state.next_window = idx + 1
                window_log["loss"] += loss_sum
                window_log["tokens"] += tokens
                progress.update(1)
                if state.global_step % args.logging_steps == 0 or state.next_window >= n_windows:
                    mean = window_log["loss"] / max(window_log["tokens"], 1)
                    tps = window_log["tokens"] * P / max(time.perf_counter() - window_log["t0"], 1e-9)
                    state.train_curve.append([state.global_step, mean])
                    lr = scheduler.get_last_lr()[0]
                    progress.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(min(mean, 50)):.1f}", tok_s=f"{tps:.0f}")
                    if accelerator.is_main_process:
                        _write_metrics(out, {"type": "train", "step": state.global_step, "epoch": state.epoch,
                                             "loss": mean, "perplexity": math.exp(min(mean, 50)), "lr": lr,
                                             "tokens_per_sec": tps})
                    if args.with_tracking:
                        accelerator.log({"train/loss": mean, "train/perplexity": math.exp(min(mean, 50)), "lr": lr},
                                        step=state.global_step)
                    window_log = {"loss": 0.0, "tokens": 0, "t0": time.perf_counter()}
                end_of_epoch = state.next_window >= n_windows
                if end_of_epoch:
                    state.epoch += 1
                    state.next_window = 0
                    state.carried = None
                    cache = None
                if args.eval_steps and state.global_step % args.eval_steps == 0 and not end_of_epoch:
                    validate()
                if end_of_epoch:
                    validate()
                if args.stop_after_steps and state.global_step >= args.stop_after_steps:
                    stop.requested, stop.signal_name = True, "--stop_after_steps"  # exit status 0: as asked
                want_stop = _any_across(accelerator, stop.requested)
                periodic = (every and state.global_step % every == 0) or (end_of_epoch and args.checkpointing_steps == "epoch")
                if periodic or want_stop:
                    state.carried = cache
                    checkpoint()
                if want_stop:
                    stopped_early = True
                    break
                if state.global_step >= max_steps:
                    break
                if end_of_epoch:
                    break
            if stopped_early or state.global_step >= max_steps:
                break
    progress.close()

    if stopped_early:
        msg = (f"stopped by {stop.signal_name} at step {state.global_step}; checkpoint saved to {last_ckpt}. "
               f"Continue with --resume_from_checkpoint latest --output_dir {out}")
        accelerator.print(msg)
        return {"interrupted": True, "step": state.global_step, "checkpoint": str(last_ckpt),
                "signal": stop.signal_name, "exit_code": 128 + stop.signum if stop.signum else 0}

    if not state.valid_curve or state.valid_curve[-1][0] != state.global_step:
        validate()
    return finish(accelerator, model, tokenizer, prepared, state, model_args, data_args, args, command, settings)


def _resume(accelerator, optimizer, scheduler, state, args, resume_path, saved, changes) -> int:
    """Load a checkpoint into the run, apply this run's changeable flags, record the resume; return the branch."""
    out = Path(args.output_dir)
    # accelerate restores the optimiser's hyper-parameters with its state: keep this run's (weight decay,
    # momentum, betas), which the optimiser was just built from; the schedule then sets the rates
    fresh = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in optimizer.param_groups]
    accelerator.load_state(str(resume_path))  # weights, optimiser, RNG: read with weights_only=True
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)
    restore_state(saved, resume_path, state, scheduler, args, accelerator.process_index, accelerator.device)
    branch, new_branch = next_branch(resume_path, out)
    aside = None
    if new_branch or any(k not in MUTABLE_WITHOUT_EFFECT for k in changes):
        aside = set_aside_future_best(accelerator, out / BEST_DIR, state, branch)
    accelerator.print(f"resumed from {resume_path} at step {state.global_step}"
                      + (f" on new branch {branch} (the later checkpoints are kept)" if new_branch else ""))
    if accelerator.is_main_process:
        keep = out / f"metrics-before-branch{branch}.jsonl" if new_branch else None
        truncate_metrics(out / METRICS_FILE, state.global_step, keep_copy_as=keep)
        _write_metrics(out, {"type": "resume", "step": state.global_step, "from": str(resume_path),
                             "branch": branch, "changed": changes, "lr": scheduler.get_last_lr()[0],
                             **({"best_model_set_aside": str(aside)} if aside else {})})
    accelerator.wait_for_everyone()
    return branch


def finish(accelerator, model, tokenizer, prepared, state, model_args, data_args, args, command, settings) -> dict:
    """Evaluate the best model on validation and test and write the Hub-ready folder."""
    from transformers import AutoModelForCausalLM

    from hwlm.hub import example_prompt, push_folder, save_hub_folder

    out = Path(args.output_dir)
    best_dir = out / BEST_DIR
    if (best_dir / "config.json").is_file():
        final = AutoModelForCausalLM.from_pretrained(best_dir).to(accelerator.device)
    else:
        final = accelerator.unwrap_model(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: dict[str, Any] = {
        "train_steps": state.global_step,
        "epochs": state.epoch,
        "best_step": state.best_step,
        "num_parameters": sum(p.numel() for p in final.parameters()),
        "eval_method": "stream" if supports_state_carrying(final) else "sliding_window",
    }
    for split in ("validation", "test"):
        try:
            tokens = prepared.stream_tensor(split)
        except (KeyError, ValueError):
            continue
        res = evaluate_perplexity(
            final, tokens, accelerator=accelerator, batch_size=args.per_device_eval_batch_size, bptt=args.bptt,
            window=data_args.block_size, stride=args.eval_stride, pad_token_id=pad_id,
        )
        for key, value in res.items():
            results[f"{split}_{key}"] = value
    if accelerator.is_main_process:
        (out / "all_results.json").write_text(json.dumps(results, indent=2))
        plot_curves(state, out / CURVES_FILE)
        prompt_source = prepared.stream_tensor("validation") if "validation_perplexity" in results else []
        save_hub_folder(
            out,
            final,
            tokenizer,
            card=dict(
                model_name=args.hub_model_id.split("/")[-1] if args.hub_model_id else out.name,
                results=results,
                command=command,
                settings=settings,
                dataset_name=getattr(data_args, "dataset_name", None),
                license=args.license,
                repo_id=args.hub_model_id,
                num_parameters=results["num_parameters"],
                prompt=example_prompt(tokenizer, prompt_source),
            ),
        )
        summary = ", ".join(f"{k} {v:.2f}" for k, v in results.items() if k.endswith("perplexity"))
        print(f"done: {summary}; model folder: {out}")
        if args.push_to_hub:
            if not args.hub_model_id:
                raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/hwlm-ptb-lstm)")
            url = push_folder(out, args.hub_model_id, private=args.hub_private_repo)
            print(f"pushed to {url}")
    accelerator.wait_for_everyone()
    return results
