"""The training run: ``check_settings`` -> ``build_run`` -> ``fit`` (train, validate, checkpoint) -> ``export``.

One loop for every model and both batching regimes: the loader's batches say what the model reads given the
carried state (`hwlm.batching`), so the loop never asks which regime or which model it runs. With
``batching="streams"`` consecutive windows of B parallel streams carry ``outputs.cache`` from one window to the
next (detached: truncated BPTT); with ``batching="blocks"`` shuffled independent blocks carry nothing.

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
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from hwlm.evaluation import evaluate_perplexity
from hwlm.model_building import build_model  # noqa: F401  (re-exported: hwlm.training.loop.build_model)
from hwlm.training import arguments
from hwlm.training.arguments import check_output_dir
from hwlm.training.checkpoint import quiet_tied_weights, save_checkpoint
from hwlm.output_folders import tracked_writes
from hwlm.training.resume import find_resume_checkpoint, read_resume
from hwlm.training.run import (
    BEST_DIR,
    CURVES_FILE,
    RUN_FILE,
    TRAIN_WRITES,
    Run,
    StopRequest,
    TrainerState,
    TrainingDiverged,
    no_library_bars,
    plot_curves,
    write_metrics,
)
from hwlm.training.session import (
    BEST_RECORD,
    USELESS_LOSS_FACTOR,
    check_launch,
    claim_output_dir,
    is_useless_loss,
    owned_by_train,
    process_table,
    start_accelerator,
    state_writer,
)
from hwlm.training.setup import build_run

__all__ = ["train", "fit", "validate", "save", "TrainingDiverged", "TrainerState", "check_output_dir", "RUN_FILE"]


def _settings(*arg_objs) -> dict:
    return {k: v for obj in arg_objs for k, v in asdict(obj).items()}


def train(model_args, data_args, args, command: str | None = None) -> dict[str, Any]:
    """Run a training job end to end and return its results (also written to ``all_results.json``).

    A run stopped by SIGINT/SIGTERM returns ``{"interrupted": True, ..., "exit_code": 128 + signal}`` after
    saving a checkpoint. The output folder is locked while the run writes, and the process group is
    destroyed at the end of every run, whatever way it ends.

    Raises:
        ValueError: bad settings or inputs, a folder hwlm may not write into, a resume that changes the model,
            batch layout or data (all checked before any compute; the settings before the Accelerator exists,
            so every process of a multi-process run fails alike instead of waiting for the others).
        CheckpointError: ``--resume_from_checkpoint`` names a partial, corrupt or unsafe checkpoint.
        TrainingDiverged: the loss became NaN/inf or uselessly large (the last good checkpoint is kept).
    """
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.output_dir)
    arguments.check_settings(model_args, data_args, args)  # before the Accelerator: every rank fails alike
    resume_path = find_resume_checkpoint(args, out)
    accelerator = start_accelerator(args, mixed_precision=args.mixed_precision, project_dir=str(out),
                                    log_with=(args.report_to if args.with_tracking else None))
    lock = run = None
    try:
        check_launch(accelerator)
        settings = {**_settings(model_args, data_args, args), "num_processes": accelerator.num_processes}
        saved, changes = read_resume(resume_path, settings, {f.name for f in fields(data_args)})
        payload = ({"command": command, "settings": settings} if saved is None
                   else {"last_resume": {"command": command, "from": str(resume_path), "changed": changes}})
        payload["processes"] = process_table(accelerator)  # one entry per rank: proof of what actually ran
        lock = claim_output_dir(accelerator, args, marker=RUN_FILE, writes=TRAIN_WRITES, check=check_output_dir,
                                resume=saved is not None, payload=payload)
        with tracked_writes(out, RUN_FILE, owned_by_train) if accelerator.is_main_process else nullcontext():
            run = build_run(accelerator, model_args, data_args, args, command=command, settings=settings,
                            resume_path=resume_path, saved=saved, changes=changes)
            return _fit_and_export(run)
    finally:
        if lock is not None:
            lock.release()
        # Release the DDP-wrapped model while the process group is alive: its reducer holds the group, and freed
        # only after `end_training` (when this frame ends) gloo's destructor was seen to hang a rank at exit.
        run = None
        accelerator.free_memory()
        accelerator.end_training()  # destroys the process group: no rank is left waiting at exit


def _fit_and_export(run: Run) -> dict[str, Any]:
    """`fit`, then either report the interruption or validate the last step and `export` the model folder."""
    from hwlm.training.export import export

    if fit(run):
        stop, out = run.stop, run.out
        run.accelerator.print(
            f"stopped by {stop.signal_name} at step {run.state.global_step}; checkpoint saved to "
            f"{run.last_checkpoint}. Continue with --resume_from_checkpoint latest --output_dir {out}")
        return {"interrupted": True, "step": run.state.global_step, "checkpoint": str(run.last_checkpoint),
                "signal": stop.signal_name, "exit_code": 128 + stop.signum if stop.signum else 0}
    if not run.state.valid_curve or run.state.valid_curve[-1][0] != run.state.global_step:
        validate(run)
    return export(run)


# ----------------------------------------------------------------------------------------- fit


@contextmanager
def _catch_signals(stop: StopRequest):
    """Route SIGINT/SIGTERM to ``stop`` while training (only the main thread may install handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def fit(run: Run) -> bool:
    """Train until ``max_steps`` or the last epoch; returns True when a stop request ended the run (after saving)."""
    from tqdm.auto import tqdm

    progress = tqdm(
        total=run.max_steps, initial=run.state.global_step, desc="train", dynamic_ncols=True,
        disable=not run.accelerator.is_local_main_process or run.args.disable_tqdm,
    )
    run.model.train()
    try:
        with _catch_signals(run.stop):
            while run.state.global_step < run.max_steps and run.state.epoch < run.num_epochs:
                if _fit_epoch(run, progress):
                    return True
        return False
    finally:
        progress.close()


def _step_groups(batches: Iterable, size: int, num_batches: int) -> Iterator[list]:
    """Group micro-batches into optimiser steps of ``size``; the epoch's last batch closes a shorter group."""
    group: list = []
    for batch in batches:
        group.append(batch)
        if len(group) == size or batch.index == num_batches - 1:
            yield group
            group = []


def _fit_epoch(run: Run, progress) -> bool:
    """Train from the state's position to the end of its epoch (or ``max_steps``, or a stop); True on a stop."""
    state, loader = run.state, run.loader
    loader.set_epoch(state.epoch)
    run.scheduler.set_epoch(state.epoch)
    num_batches = len(loader)
    carried = state.carried if state.next_window > 0 else None  # a resumed epoch continues the saved state
    meter = _Meter()
    for group in _step_groups(loader.iter_from(state.next_window), run.args.gradient_accumulation_steps, num_batches):
        loss_sum, tokens, carried = _optimizer_step(run, group, carried)
        state.global_step += 1
        state.next_window = group[-1].index + 1
        meter.add(loss_sum, tokens)
        progress.update(1)
        end_of_epoch = state.next_window >= num_batches
        if state.global_step % run.args.logging_steps == 0 or end_of_epoch:
            _log_train(run, meter, progress)
            meter = _Meter()
        if end_of_epoch:
            state.epoch, state.next_window, carried = state.epoch + 1, 0, None
        if end_of_epoch or (run.args.eval_steps and state.global_step % run.args.eval_steps == 0):
            validate(run)
        if _checkpoint_and_stop(run, carried, end_of_epoch):
            return True
        if end_of_epoch or state.global_step >= run.max_steps:
            return False
    return False


def _optimizer_step(run: Run, group: list, carried: Any) -> tuple[float, int, Any]:
    """One optimiser step over the micro-batches in ``group``; returns ``(summed loss, tokens, carried state)``.

    Raises `TrainingDiverged` (on every rank alike) when the step's loss is NaN/inf or uselessly large.
    """
    accelerator, model = run.accelerator, run.model
    loss_sum, tokens, finite = 0.0, 0, True
    for i, batch in enumerate(group):
        sync = i == len(group) - 1  # gradients are all-reduced once, on the step's last micro-batch
        with nullcontext() if sync or accelerator.num_processes == 1 else accelerator.no_sync(model):
            outputs = model(**batch.model_inputs(carried, accelerator.device))
            carried = batch.carry(outputs)
            loss = outputs.loss
            del outputs  # the logits (tokens x vocabulary) need not stay alive through backward
            accelerator.backward(loss / len(group))
        loss_value = float(loss.detach())  # one host sync per micro-batch: the meter's figure and the NaN check
        finite = finite and math.isfinite(loss_value)
        loss_sum += loss_value * batch.num_tokens
        tokens += batch.num_tokens
    step_loss = loss_sum / max(tokens, 1) if finite else float("nan")
    _stop_if_diverged(run, step_loss, lambda: (
        f"the training loss {_what(step_loss, run.vocab_size)} at step {run.state.global_step + 1} "
        f"(epoch {run.state.epoch}, micro-batch {group[-1].index}); stopping. The last good checkpoint is "
        f"{run.last_checkpoint}. Lower --learning_rate (a resumed run takes the new rate), set --max_grad_norm, "
        "or use --mixed_precision no."))
    if run.args.max_grad_norm and run.args.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), run.args.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum, tokens, carried


def _what(loss: float, vocab_size: int) -> str:
    if not math.isfinite(loss):
        return "became NaN or infinite"
    return f"reached {loss:.4g}, above {USELESS_LOSS_FACTOR:g} x ln(vocab_size={vocab_size})"


def _stop_if_diverged(run: Run, loss: float, message) -> None:
    """Raise `TrainingDiverged` with ``message()`` on every rank when ``loss`` is useless on any rank.

    accelerate's trigger is the cross-rank flag: set where the loss is bad, reduced over ranks by ``check_trigger``.
    """
    if is_useless_loss(loss, run.vocab_size):
        run.accelerator.set_trigger()
    if run.accelerator.check_trigger():
        raise TrainingDiverged(message())


def _checkpoint_and_stop(run: Run, carried: Any, end_of_epoch: bool) -> bool:
    """Save a checkpoint when one is due or a stop was requested (on any rank); True when the run must stop."""
    args, state = run.args, run.state
    if args.stop_after_steps and state.global_step >= args.stop_after_steps:
        run.stop.requested, run.stop.signal_name = True, "--stop_after_steps"  # exit status 0: as asked
    if run.stop.requested:
        run.accelerator.set_trigger()
    want_stop = run.accelerator.check_trigger()  # a signal to one rank stops every rank at this step
    every = args.checkpoint_every_steps
    periodic = (every is not None and state.global_step % every == 0) or (end_of_epoch and args.checkpoint_each_epoch)
    if periodic or want_stop:
        state.carried = carried
        save(run)
    return want_stop


class _Meter:
    """Loss and tokens since the last log line, and when that line was written (for tokens/s)."""

    def __init__(self):
        self.loss, self.tokens, self.t0 = 0.0, 0, time.perf_counter()

    def add(self, loss_sum: float, tokens: int) -> None:
        self.loss += loss_sum
        self.tokens += tokens


def _log_train(run: Run, meter: _Meter, progress) -> None:
    """One metrics record, the progress bar's figures (loss, perplexity, learning rate, tokens/s) and trackers."""
    state = run.state
    mean = meter.loss / max(meter.tokens, 1)
    ppl = math.exp(min(mean, 50))
    tps = meter.tokens * run.accelerator.num_processes / max(time.perf_counter() - meter.t0, 1e-9)
    lr = run.scheduler.get_last_lr()[0]
    state.train_curve.append([state.global_step, mean])
    progress.set_postfix(loss=f"{mean:.3f}", ppl=f"{ppl:.1f}", lr=f"{lr:.3g}", tok_s=f"{tps:.0f}")
    if run.accelerator.is_main_process:
        write_metrics(run.out, {"type": "train", "step": state.global_step, "epoch": state.epoch, "loss": mean,
                                "perplexity": ppl, "lr": lr, "tokens_per_sec": tps}, cpu_s=state.cpu_seconds())
    if run.args.with_tracking:
        run.accelerator.log({"train/loss": mean, "train/perplexity": ppl, "lr": lr}, step=state.global_step)


# ----------------------------------------------------------------------------------------- validate, save


def validate(run: Run) -> dict:
    """Score the validation tokens, stop a diverged run, step the plateau schedule, keep the best model, log."""
    from tqdm.auto import tqdm

    state, accelerator, out = run.state, run.accelerator, run.out
    res = evaluate_perplexity(run.model, run.valid_tokens, **run.evaluation_kwargs())
    vocab_size = run.vocab_size
    _stop_if_diverged(run, res["loss"], lambda: (
        f"the validation loss is {res['loss']:.4g} at step {state.global_step}, above "
        f"{USELESS_LOSS_FACTOR:g} x ln(vocab_size={vocab_size}) = {USELESS_LOSS_FACTOR * math.log(vocab_size):.1f}: "
        f"the run diverged. The last good checkpoint is {run.last_checkpoint}. Lower --learning_rate (a resumed run "
        "takes the new rate) or --max_grad_norm."))
    run.scheduler.on_evaluate(res["loss"])
    state.valid_curve.append([state.global_step, res["perplexity"]])
    if res["loss"] < state.best_valid_loss:
        state.best_valid_loss, state.best_step = res["loss"], state.global_step
        run.best_validation = res if not run.args.max_eval_tokens else None  # export reuses a whole-split score
        if accelerator.is_main_process:
            with no_library_bars():
                run.unwrapped.save_pretrained(out / BEST_DIR)
            (out / BEST_DIR / BEST_RECORD).write_text(json.dumps({"step": state.global_step, "branch": run.branch}))
        accelerator.wait_for_everyone()
    lr = run.scheduler.get_last_lr()[0]
    if accelerator.is_main_process:
        write_metrics(out, {"type": "eval", "split": "validation", "step": state.global_step, "epoch": state.epoch,
                            "loss": res["loss"], "perplexity": res["perplexity"], "lr": lr}, cpu_s=state.cpu_seconds())
        plot_curves(state, out / CURVES_FILE)
        best = " (best so far)" if state.best_step == state.global_step else ""
        tqdm.write(f"step {state.global_step}: validation loss {res['loss']:.3f}, ppl {res['perplexity']:.2f}, "
                   f"lr {lr:.3g}{best}")
    if run.args.with_tracking:
        accelerator.log({"valid/loss": res["loss"], "valid/perplexity": res["perplexity"]}, step=state.global_step)
    return res


def _all_finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def save(run: Run) -> None:
    """Write a checkpoint of the run (accelerate's state + hwlm's JSON state + the carried state per rank)."""
    state = run.state
    if not _all_finite(run.unwrapped):
        raise TrainingDiverged(
            f"the weights became NaN or infinite at step {state.global_step}; not saving them. The last good "
            f"checkpoint is {run.last_checkpoint}. Lower --learning_rate or --max_grad_norm."
        )
    with quiet_tied_weights(run.unwrapped):  # a tied head is saved once by design: no warning per checkpoint
        run.last_checkpoint = save_checkpoint(
            run.accelerator, run.out, state.global_step, {"epoch": state.epoch, "next_window": state.next_window},
            keep_last=run.args.save_total_limit, branch=run.branch,
            write_extra=state_writer(run.accelerator, state, run.scheduler, run.settings),
        )
