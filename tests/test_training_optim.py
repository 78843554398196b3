"""Optimisers, schedules and run-setting parsing."""

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import _toy  # noqa: F401
from hwlm.training.optim import EpochDecay, PlateauScheduler, create_scheduler, param_groups


def test_no_weight_decay_on_biases_norms_and_embeddings():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 10, bias=False))
    model[3].weight = model[0].weight  # tied head
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[1].weight)}
    assert len(no_decay["params"]) == 4  # embedding (= tied head), linear bias, norm weight + bias


def test_zaremba_schedule_halves_each_epoch_after_epoch_4():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = EpochDecay(opt, factor=2.0, start_epoch=4)
    lrs = []
    for epoch in range(7):
        sched.set_epoch(epoch)
        lrs.append(sched.get_last_lr()[0])
    assert lrs == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_plateau_divides_when_validation_does_not_improve():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0)
    sched = PlateauScheduler(opt, factor=4.0)
    for loss in (5.0, 4.0, 4.5, 3.9, 3.95):
        sched.on_evaluate(loss)
    assert sched.get_last_lr() == [20.0 / 16]
    state = sched.state_dict()
    other = PlateauScheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0), factor=4.0)
    other.load_state_dict(state)
    assert other.get_last_lr() == [1.25] and other.best == 3.9


def test_linear_warmup_through_transformers():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    args = SimpleNamespace(lr_scheduler_type="linear", num_warmup_steps=2)
    sched = create_scheduler(opt, args, num_training_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == [0.0, 0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="lr_scheduler_type='warp' is not supported"):
        create_scheduler(opt, SimpleNamespace(lr_scheduler_type="warp"), 4)


def test_preset_then_flags_override(tmp_path):
    from hwlm.cli.train import parse as parse_args

    preset = tmp_path / "p.yaml"
    preset.write_text("bptt: 20\nlearning_rate: 1.0\nconfig_overrides:\n  hidden_size: 200\n  tie_word_embeddings: true\n")
    model_args, data_args, args = parse_args(["--config", str(preset), "--learning_rate", "0.5"])
    assert args.bptt == 20 and args.learning_rate == 0.5
    assert model_args.config_overrides == "hidden_size=200,tie_word_embeddings=true"
    from hwlm.training.arguments import parse_config_overrides

    assert parse_config_overrides(model_args.config_overrides) == {"hidden_size": 200, "tie_word_embeddings": True}
    preset.write_text("bptt: 20\nbatch: 3\n")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['batch'\]"):
        parse_args(["--config", str(preset)])


@pytest.mark.parametrize("name", ["quickstart", "ptb-small-zaremba", "ptb-tied-regularised", "wikitext2-lstm",
                                  "wikitext2-transformer"])
def test_every_preset_parses_and_builds_its_model(name):
    from pathlib import Path

    from hwlm.tokenization import train_word_tokenizer
    from hwlm.cli.train import parse as parse_args
    from hwlm.model_building import build_model

    preset = Path(__file__).resolve().parents[1] / "presets" / f"{name}.yaml"
    model_args, data_args, args = parse_args(["--config", str(preset)])
    tok = train_word_tokenizer([" ".join(f"w{i}" for i in range(50))])
    model = build_model(model_args, tok, block_size=data_args.block_size if args.batching == "blocks" else None,
                        batching=args.batching)
    n = sum(p.numel() for p in model.parameters())
    assert n > 0
    if name == "ptb-small-zaremba":
        assert (model.config.hidden_size, model.config.num_hidden_layers, args.bptt, args.max_grad_norm) == (200, 2, 20, 0.25)
        assert args.learning_rate * args.max_grad_norm == 5.0  # lr 1 / clip 5 on a loss summed over 20 steps
    if name == "ptb-tied-regularised":  # <= 5M parameters at PTB's 10k vocabulary
        cfg = model.config
        assert cfg.tie_word_embeddings and cfg.weight_dropout > 0
        big = type(model)(type(cfg)(**{**cfg.to_dict(), "vocab_size": 10000}))
        assert sum(p.numel() for p in big.parameters()) <= 5_000_000


def test_plateau_and_epoch_decay_are_torch_schedulers_and_read_checkpoints_from_before_the_change():
    from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0)
    plateau = create_scheduler(opt, SimpleNamespace(lr_scheduler_type="plateau", lr_decay_factor=4.0), 10)
    assert isinstance(plateau.scheduler, ReduceLROnPlateau)
    plateau.on_evaluate(5.0)
    plateau.on_evaluate(5.0)  # not better: torch's scheduler divides the rate
    assert plateau.scheduler.best == 5.0 and opt.param_groups[0]["lr"] == 5.0
    # the JSON progress the hand-written scheduler saved before the change: best loss and decays so far
    plateau.load_state_dict({"best": 3.9, "num_decays": 2})
    assert plateau.get_last_lr() == [1.25] and plateau.scheduler.best == 3.9
    plateau.on_evaluate(3.95)
    assert plateau.get_last_lr() == [1.25 / 4] and plateau.state_dict() == {"best": 3.9, "num_decays": 3}

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    decay = create_scheduler(opt, SimpleNamespace(lr_scheduler_type="epoch_decay", lr_decay_factor=2.0,
                                                  lr_decay_start_epoch=4), 10)
    assert isinstance(decay.scheduler, LambdaLR)
    decay.load_state_dict({"epoch": 6})  # as saved before the change
    assert decay.get_last_lr() == [0.125] and opt.param_groups[0]["lr"] == 0.125


def test_epoch_decay_steps_by_epoch_without_torch_ordering_warning():
    import warnings

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stepping at the epoch's start, before its optimiser steps, is intended
        EpochDecay(opt, factor=2.0, start_epoch=0).set_epoch(0)
    assert opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("kind", ["plateau", "epoch_decay", "linear", "cosine", "constant_with_warmup"])
def test_every_schedule_is_a_schedule_and_resumes_to_the_same_rates(kind):
    from hwlm.training.optim import Schedule

    def build():
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        args = SimpleNamespace(lr_scheduler_type=kind, num_warmup_steps=2, lr_decay_factor=2.0,
                               lr_decay_start_epoch=1, min_lr=0.0)
        return opt, create_scheduler(opt, args, num_training_steps=10)

    opt, sched = build()
    assert isinstance(sched, Schedule)
    for step in range(5):  # an uninterrupted run: steps, an epoch boundary, evaluations that do not improve
        opt.step()
        sched.step()
        sched.set_epoch(step // 2)
        sched.on_evaluate(4.0)
    saved = json.loads(json.dumps(sched.state_dict()))  # what a checkpoint holds
    resumed_opt, resumed = build()
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == sched.get_last_lr() and resumed_opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
