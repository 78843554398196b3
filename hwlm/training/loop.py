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
import shutil
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwlm.evaluation import evaluate_perplexity, supports_state_carrying
from hwlm.training.arguments import parse_config_overrides
from hwlm.training.checkpoint import (
    find_latest_checkpoint,
    load_state_tensors,
    resolve_checkpoint,
    save_checkpoint,
    state_tensors,
)
from hwlm.training.loaders import BlockLoader, StreamLoader
from hwlm.training.optim import create_optimizer, create_scheduler

__all__ = ["train", "TrainingDiverged", "TrainerState", "check_output_dir", "build_model", "RUN_FILE"]

RUN_FILE = "hwlm_run.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
BEST_DIR = "best_model"


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
    carried: list = field(default_factory=list)  # tensors of the recurrent state at the checkpoint

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


# ----------------------------------------------------------------------------------------- setup


def check_output_dir(args) -> None:
    """Refuse an ``--output_dir`` that holds another run unless overwriting or resuming."""
    out = Path(args.output_dir)
    if not out.is_dir() or args.resume_from_checkpoint:
        return
    markers = [n for n in (RUN_FILE, "checkpoints", "config.json", "all_results.json", METRICS_FILE) if (out / n).exists()]
    if markers and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {str(out)!r} already holds a run ({', '.join(markers)}). Pass --overwrite_output_dir to "
            "replace it, --resume_from_checkpoint latest to continue it, or choose another --output_dir."
        )


def _clear_previous_run(out: Path) -> None:
    for name in ("checkpoints", BEST_DIR, METRICS_FILE, "all_results.json", CURVES_FILE):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


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

    def __call__(self, signum, frame):
        self.requested = True
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


def _truncate_metrics(out: Path, step: int) -> None:
    """On resume, drop metric lines written after the checkpoint's step (the resumed run rewrites them)."""
    path = out / METRICS_FILE
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


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

    Raises:
        ValueError: bad settings or inputs (checked before any compute).
        CheckpointError: ``--resume_from_checkpoint`` names a partial or corrupt checkpoint.
        TrainingDiverged: the loss or the weights became NaN/inf (the last good checkpoint is kept).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.output_dir)
    check_output_dir(args)
    resume_path = resolve_checkpoint(args.resume_from_checkpoint, out) if args.resume_from_checkpoint else None
    if args.gradient_accumulation_steps < 1:
        raise ValueError(f"--gradient_accumulation_steps must be >= 1, got {args.gradient_accumulation_steps}")
    if args.checkpointing_steps not in (None, "no", "epoch") and not str(args.checkpointing_steps).isdigit():
        raise ValueError(f"--checkpointing_steps must be an integer, 'epoch' or 'no', got {args.checkpointing_steps!r}")

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=(args.report_to if args.with_tracking else None),
        project_dir=str(out),
    )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if args.overwrite_output_dir and not resume_path:
            _clear_previous_run(out)
    accelerator.wait_for_everyone()
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
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(state)
    settings = _settings(model_args, data_args, args)

    if resume_path is not None:
        accelerator.load_state(str(resume_path))  # restores weights, optimiser, schedule, RNG, TrainerState
        _ = accelerator.print(f"resumed from {resume_path} at step {state.global_step}")
        if accelerator.is_main_process:
            _truncate_metrics(out, state.global_step)
    elif accelerator.is_main_process:
        (out / RUN_FILE).write_text(json.dumps({"command": command, "settings": settings}, indent=2, default=str))
    if args.with_tracking:
        accelerator.init_trackers(
            "hwlm", config={k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}
        )

    stop = _StopFlag()
    stopped_early = False
    last_ckpt = find_latest_checkpoint(out)
    unwrapped = accelerator.unwrap_model(model)
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
            keep_last=args.save_total_limit,
        )

    def validate() -> dict:
        res = evaluate_perplexity(
            model, valid_tokens, accelerator=accelerator, batch_size=args.per_device_eval_batch_size,
            bptt=args.bptt, window=data_args.block_size, stride=args.eval_stride, pad_token_id=pad_id,
        )
        scheduler.on_evaluate(res["loss"])
        state.valid_curve.append([state.global_step, res["perplexity"]])
        if res["loss"] < state.best_valid_loss:
            state.best_valid_loss, state.best_step = res["loss"], state.global_step
            if accelerator.is_main_process:
                unwrapped.save_pretrained(out / BEST_DIR)
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
            cache = None
            if state.next_window > 0 and state.carried and args.batching == "streams":
                cache = _restore_cache(unwrapped, loader, state.carried, accelerator.device)
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
                if _any_across(accelerator, not finite):
                    progress.close()
                    raise TrainingDiverged(
                        f"the training loss became NaN or infinite at step {step_no} (epoch {state.epoch}, "
                        f"micro-batch {idx}); stopping. The last good checkpoint is {last_ckpt}. Lower "
                        "--learning_rate, set --max_grad_norm, or use --mixed_precision no."
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
                    state.carried = []
                    cache = None
                if args.eval_steps and state.global_step % args.eval_steps == 0 and not end_of_epoch:
                    validate()
                if end_of_epoch:
                    validate()
                if args.stop_after_steps and state.global_step >= args.stop_after_steps:
                    stop.requested, stop.signal_name = True, "--stop_after_steps"
                want_stop = _any_across(accelerator, stop.requested)
                periodic = (every and state.global_step % every == 0) or (end_of_epoch and args.checkpointing_steps == "epoch")
                if periodic or want_stop:
                    state.carried = [t.detach().cpu() for t in state_tensors(cache)] if cache is not None else []
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
        accelerator.end_training()
        return {"interrupted": True, "step": state.global_step, "checkpoint": str(last_ckpt)}

    if not state.valid_curve or state.valid_curve[-1][0] != state.global_step:
        validate()
    results = finish(accelerator, model, tokenizer, prepared, state, model_args, data_args, args, command, settings)
    accelerator.end_training()
    return results


def _restore_cache(unwrapped, loader: StreamLoader, tensors: list, device):
    """Rebuild the carried recurrent state saved in a checkpoint, without knowing its class.

    A zero state of the right structure comes from one forward pass with ``cache=None`` on one token per
    stream (no gradient, no RNG use in eval mode); its tensors are then overwritten with the saved ones.
    """
    was_training = unwrapped.training
    unwrapped.eval()
    with torch.no_grad():
        probe = loader.inputs[:, :1].to(device)  # (B, 1)
        template = unwrapped(input_ids=probe, cache=None, use_cache=True).cache
    unwrapped.train(was_training)
    return load_state_tensors(template, tensors)


def finish(accelerator, model, tokenizer, prepared, state, model_args, data_args, args, command, settings) -> dict:
    """Evaluate the best model on validation and test and write the Hub-ready folder."""
    from transformers import AutoModelForCausalLM

    from hwlm.hub import push_folder, write_model_card

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
        final.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "all_results.json").write_text(json.dumps(results, indent=2))
        plot_curves(state, out / CURVES_FILE)
        write_model_card(
            out,
            model_name=args.hub_model_id.split("/")[-1] if args.hub_model_id else out.name,
            config=final.config,
            results=results,
            command=command,
            settings=settings,
            dataset_name=getattr(data_args, "dataset_name", None),
            license=args.license,
            repo_id=args.hub_model_id,
            num_parameters=results["num_parameters"],
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
