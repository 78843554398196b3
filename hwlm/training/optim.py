"""Optimisers and learning-rate schedules.

* ``sgd`` with ``plateau``: the LSTM literature's schedule (Zaremba et al. 2014, Merity et al. 2018,
  pytorch/examples): keep the learning rate while validation perplexity improves, divide it by
  ``lr_decay_factor`` after an evaluation that does not improve it (torch's ``ReduceLROnPlateau``), never below
  ``min_lr``.
* ``sgd`` with ``epoch_decay``: Zaremba et al.'s fixed decay: lr stays for ``lr_decay_start_epoch``
  epochs and is then divided by ``lr_decay_factor`` at the start of each later epoch
  (PTB small: lr 1, halved each epoch after epoch 4; torch's ``LambdaLR`` stepped per epoch).
* ``adamw`` with warmup and ``linear`` / ``cosine`` / ``constant`` / ``constant_with_warmup`` decay
  through ``transformers.get_scheduler``.

Weight decay never applies to biases, normalisation weights or embeddings (nor to a head tied to them).
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from transformers import get_scheduler

from hwlm.errors import UserError

__all__ = ["param_groups", "create_optimizer", "create_scheduler", "Schedule", "PlateauScheduler", "EpochDecay",
           "TransformersSchedule"]

HF_SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
SCHEDULES = HF_SCHEDULES + ("plateau", "epoch_decay")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters into a decayed group and a group without weight decay.

    No decay: parameters of ``nn.Embedding`` and normalisation modules (and whatever is tied to them,
    e.g. a tied output head), and every parameter with fewer than 2 dimensions (biases, norm gains).
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)) or "norm" in type(
            module
        ).__name__.lower():
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in no_decay_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """Build the optimiser named by ``args.optimizer`` (``sgd`` or ``adamw``)."""
    groups = param_groups(model, args.weight_decay)
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=args.learning_rate, momentum=args.momentum)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(
            groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
        )
    raise UserError(f"optimizer={args.optimizer!r} is not supported; use 'sgd' or 'adamw'")


@runtime_checkable
class Schedule(Protocol):
    """
    What the training loop calls on every learning-rate schedule, whichever moves it (optimiser steps, epochs or
    validation losses). The state is the schedule's *progress*, JSON-able, never its rates: the rates are recomputed
    from this run's flags, so a resumed run may change ``--learning_rate``, the decay factor, warmup or the length.
    """

    def step(self) -> None:
        """After each optimiser step."""

    def set_epoch(self, epoch: int) -> None:
        """At the start of epoch ``epoch`` (0-based), also straight to a resumed epoch."""

    def on_evaluate(self, valid_loss: float) -> None:
        """After each validation, with its mean loss."""

    def get_last_lr(self) -> list[float]:
        """The current rate of each parameter group."""

    def state_dict(self) -> dict:
        """The progress to checkpoint (JSON-able)."""

    def load_state_dict(self, state: dict) -> None:
        """Move to the saved progress; the rates follow from this run's flags."""


class EpochDecay:
    """Fixed per-epoch decay: ``lr = base_lr / factor ** max(0, epoch - start_epoch + 1)``, as torch's ``LambdaLR``.

    ``epoch`` is 0-based, so the first ``start_epoch`` epochs run at the base rate. A thin wrapper, not the bare
    ``LambdaLR``, because the loop moves it by epoch (``set_epoch``, also straight to a resumed epoch) while
    other schedules move by optimiser step, and its checkpointed state is its progress (the epoch), so a
    resumed run may change ``--learning_rate`` or the factor.
    """

    def __init__(self, optimizer, *, factor: float, start_epoch: int):
        self.factor = factor
        self.start_epoch = start_epoch
        self.scheduler = LambdaLR(optimizer, lambda epoch: 1.0 / factor ** max(0, epoch - start_epoch + 1))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.scheduler.last_epoch = epoch - 1
        with warnings.catch_warnings():
            # stepping by epoch, at the epoch's start, comes before that epoch's optimiser steps by design
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()

    def step(self) -> None:  # per optimiser step: nothing changes within an epoch
        pass

    def on_evaluate(self, valid_loss: float) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore the progress; the rate follows from this run's ``--learning_rate`` and factors."""
        self.set_epoch(int(state["epoch"]))


class PlateauScheduler:
    """Divide the learning rate by ``factor`` after an evaluation that does not beat the best loss: torch's
    ``ReduceLROnPlateau`` with ``patience=0`` and no threshold.

    A thin wrapper, not the bare scheduler, for two reasons: the loop calls every schedule through one interface
    (``step`` per optimiser step, ``on_evaluate`` per validation), and the checkpointed state is the progress
    (best loss, number of decays), not the rates, so a resumed run may change ``--learning_rate`` or the factor.
    """

    def __init__(self, optimizer, *, factor: float, min_lr: float = 0.0):
        self.optimizer = optimizer
        self.factor = factor
        self.min_lr = min_lr
        # eps=0: divide on every non-improvement down to min_lr (the rule is "divide on every non-improvement")
        self.scheduler = ReduceLROnPlateau(optimizer, mode="min", factor=1.0 / factor, patience=0,
                                           threshold=0.0, threshold_mode="abs", eps=0.0, min_lr=min_lr)
        self.num_decays = 0
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]

    @property
    def best(self) -> float:
        return self.scheduler.best

    def set_epoch(self, epoch: int) -> None:
        pass

    def step(self) -> None:
        pass

    def on_evaluate(self, valid_loss: float) -> None:
        before = self.get_last_lr()
        self.scheduler.step(valid_loss)
        if self.get_last_lr() != before:
            self.num_decays += 1

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"best": self.best, "num_decays": self.num_decays}

    def load_state_dict(self, state: dict) -> None:
        """Restore the progress (best loss, decays so far); the rate follows from this run's flags.

        Multiplies by ``1 / factor`` once per decay, as ``ReduceLROnPlateau`` did, so an unchanged run gets
        bit-identical rates.
        """
        self.scheduler.best = float(state.get("best", float("inf")))
        self.num_decays = int(state.get("num_decays", 0))
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            lr = base
            for _ in range(self.num_decays):
                lr = float(lr) * self.scheduler.factor
            g["lr"] = max(lr, self.min_lr)


class TransformersSchedule:
    """A ``transformers.get_scheduler`` schedule (warmup, then linear / cosine / constant) as a `Schedule`."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def set_epoch(self, epoch: int) -> None:
        pass

    def step(self) -> None:
        self.scheduler.step()

    def on_evaluate(self, valid_loss: float) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict:
        return {"step": self.scheduler.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Move the schedule to optimiser step ``state["step"]``; base rates and lengths are this run's flags."""
        self.scheduler.last_epoch = int(state["step"]) - 1
        with warnings.catch_warnings():
            # moving to a resumed step comes before this process's first optimiser step by design
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()  # LambdaLR sets the rates of step `last_epoch + 1` from the base rates


def create_scheduler(optimizer, args, num_training_steps: int) -> Schedule:
    """Build the `Schedule` named by ``args.lr_scheduler_type``."""
    kind = args.lr_scheduler_type
    if kind == "plateau":
        return PlateauScheduler(optimizer, factor=args.lr_decay_factor, min_lr=getattr(args, "min_lr", 0.0))
    if kind == "epoch_decay":
        return EpochDecay(optimizer, factor=args.lr_decay_factor, start_epoch=args.lr_decay_start_epoch)
    if kind in HF_SCHEDULES:
        return TransformersSchedule(
            get_scheduler(
                kind,
                optimizer=optimizer,
                num_warmup_steps=args.num_warmup_steps,
                num_training_steps=num_training_steps,
            )
        )
    raise UserError(f"lr_scheduler_type={kind!r} is not supported; choose one of {', '.join(SCHEDULES)}")
