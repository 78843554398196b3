"""End-to-end runs of the real ``hwlm-train`` entry point at toy scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _toy import TINY_LSTM, TINY_TRANSFORMER, lstm_flags, prepare_toy, train_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_toy(tmp_path_factory.mktemp("toy"))


def train_losses(output_dir: Path) -> list[tuple[int, float]]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if r["type"] == "train"]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "lstm"
    results = train_main(lstm_flags(prepared, out, "--num_train_epochs", "2"))
    return out, results


def test_output_folder_is_hub_ready_and_reloads(trained):
    out, results = trained
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "all_results.json", "curves.png", "README.md", "metrics.jsonl"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" in config and config["model_type"] == "hwlm_lstm"
    for ref in config["auto_map"].values():
        assert (out / (ref.split(".")[0] + ".py")).is_file()
    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    meta = card.split("---\n")[1]
    for needle in ("library_name: transformers", "pipeline_tag: text-generation", "license: apache-2.0", "perplexity"):
        assert needle in meta
    assert "hwlm-train" in card  # the exact command
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["validation_perplexity"] == pytest.approx(results["validation_perplexity"])
    assert saved["test_num_tokens"] > 0 and saved["eval_method"] == "stream"
    # a trained toy model beats the uniform distribution over the vocabulary
    assert saved["validation_perplexity"] < config["vocab_size"]

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("w1 w2", return_tensors="pt")["input_ids"]
    generated = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 5) or generated.shape[1] <= ids.shape[1] + 5


def test_metrics_and_best_model(trained):
    out, results = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert len(evals) == 2  # one per epoch
    best = min(evals, key=lambda r: r["loss"])
    assert results["best_step"] == best["step"]
    assert results["validation_loss"] == pytest.approx(best["loss"], rel=1e-6)
    assert {"loss", "perplexity", "tokens_per_sec", "lr"} <= set(next(r for r in records if r["type"] == "train"))


def test_same_seed_same_losses(prepared, tmp_path):
    a = train_main(lstm_flags(prepared, tmp_path / "a", "--max_train_steps", "6", "--checkpointing_steps", "no"))
    b = train_main(lstm_flags(prepared, tmp_path / "b", "--max_train_steps", "6", "--checkpointing_steps", "no"))
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b")
    assert a["validation_loss"] == b["validation_loss"]


@pytest.mark.parametrize(
    "extra",
    [
        # dropout + weight drop (RNG state), variable windows, accumulation, plateau schedule; stop mid-epoch
        ["--config_overrides", TINY_LSTM + ",input_dropout=0.2,hidden_dropout=0.2,weight_dropout=0.3",
         "--variable_bptt", "--gradient_accumulation_steps", "2", "--num_train_epochs", "3"],
        # the Transformer on shuffled blocks with AdamW + warmup + cosine
        ["--model_type", "hwlm_transformer", "--config_overrides", TINY_TRANSFORMER + ",hidden_dropout=0.1",
         "--batching", "blocks", "--block_size", "16", "--optimizer", "adamw", "--learning_rate", "3e-3",
         "--lr_scheduler_type", "cosine", "--num_warmup_steps", "3", "--num_train_epochs", "3"],
    ],
    ids=["lstm-streams", "transformer-blocks"],
)
def test_interrupt_and_resume_reproduces_losses(prepared, tmp_path, extra):
    full = tmp_path / "full"
    part = tmp_path / "part"
    common = ["--checkpointing_steps", "3", "--save_total_limit", "2"]
    ref = train_main(lstm_flags(prepared, full, *common, *extra))
    stopped = train_main(lstm_flags(prepared, part, *common, *extra, "--stop_after_steps", "7"))
    assert stopped["interrupted"] and stopped["step"] == 7
    ckpts = sorted(p.name for p in (part / "checkpoints").iterdir())
    assert ckpts == ["step_00000006", "step_00000007"]  # keep last 2
    resumed = train_main(lstm_flags(prepared, part, *common, *extra, "--resume_from_checkpoint", "latest"))
    assert train_losses(part) == train_losses(full)
    assert len(train_losses(full)) == ref["train_steps"] > 7
    assert resumed["validation_loss"] == ref["validation_loss"]
    assert resumed["test_loss"] == ref["test_loss"]


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(prepared, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from hwlm.training.checkpoint import find_latest_checkpoint, validate_checkpoint
    from hwlm.training.loop import TrainingDiverged

    original = AutoModelForCausalLM.from_config.__func__
    calls = {"n": 0}

    def poison(module, args, kwargs, output):  # the 4th training forward returns NaN
        if module.training:
            calls["n"] += 1
            if calls["n"] == 4:
                output.loss = output.loss * float("nan")
        return output

    def from_config(cls, config, **kw):
        model = original(cls, config, **kw)
        model.register_forward_hook(poison, with_kwargs=True)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", classmethod(from_config))
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"became NaN or infinite at step 4 .*last good checkpoint is .*step_00000003"):
        train_main(lstm_flags(prepared, out, "--checkpointing_steps", "1", "--save_total_limit", "5"))
    latest = find_latest_checkpoint(out)
    assert latest.name == "step_00000003"
    validate_checkpoint(latest)
    from safetensors.torch import load_file

    weights = load_file(str(latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_bad_inputs_fail_before_compute(prepared, tmp_path):
    from hwlm.training.checkpoint import CheckpointError

    out = tmp_path / "run"
    # a tokenizer whose vocabulary does not fit the model's vocab_size
    with pytest.raises(ValueError, match=r"tokenizer has \d+ tokens but the model's vocab_size is 10"):
        train_main(lstm_flags(prepared, out, "--config_overrides", TINY_LSTM + ",vocab_size=10"))
    # --block_size above max_position_embeddings
    with pytest.raises(ValueError, match=r"--block_size 64 is above the model's max_position_embeddings=32"):
        train_main(lstm_flags(prepared, tmp_path / "t", "--model_type", "hwlm_transformer", "--config_overrides",
                              TINY_TRANSFORMER, "--batching", "blocks", "--block_size", "64"))
    # streams asked of a model that does not carry state
    with pytest.raises(ValueError, match=r"does not carry state .* --batching blocks"):
        train_main(lstm_flags(prepared, tmp_path / "t2", "--model_type", "hwlm_transformer", "--config_overrides",
                              TINY_TRANSFORMER))
    # a prepared dataset made with another tokenizer
    other_tok = tmp_path / "other_tok"
    from hwlm.tokenization import train_word_tokenizer

    train_word_tokenizer(["alpha beta gamma delta"]).save_pretrained(other_tok)
    with pytest.raises(ValueError, match=r"prepared with a different tokenizer"):
        train_main(lstm_flags(prepared, tmp_path / "t3", "--tokenizer_name", str(other_tok)))
    # an output_dir that holds another run
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "1"))
    with pytest.raises(ValueError, match=r"already holds a run .*--overwrite_output_dir"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "2"))
    # a partial checkpoint (the write never finished) and a truncated one
    ckpt = out / "checkpoints" / "step_00000002"
    (ckpt / "hwlm_checkpoint.json").rename(ckpt / "moved.json")
    with pytest.raises(CheckpointError, match=r"is partial: it has no hwlm_checkpoint.json"):
        train_main(lstm_flags(prepared, out, "--resume_from_checkpoint", str(ckpt)))
    (ckpt / "moved.json").rename(ckpt / "hwlm_checkpoint.json")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"is corrupt: 'model.safetensors' has 100 bytes"):
        train_main(lstm_flags(prepared, out, "--resume_from_checkpoint", "latest"))
    with pytest.raises(CheckpointError, match=r"no checkpoint under"):
        train_main(lstm_flags(prepared, tmp_path / "empty", "--resume_from_checkpoint", "latest"))


def test_overwrite_output_dir_replaces_the_old_run(prepared, tmp_path):
    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "3", "--checkpointing_steps", "1"))
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "no", "--overwrite_output_dir"))
    assert not (out / "checkpoints").exists()
    assert [s for s, _ in train_losses(out)] == [1, 2]


def test_with_tracking_writes_tensorboard_events(prepared, tmp_path):
    out = tmp_path / "tb"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "no",
                          "--with_tracking", "--report_to", "tensorboard"))
    assert list(out.rglob("events.out.tfevents.*"))


def test_export_reuses_the_best_models_validation_score(prepared, tmp_path, monkeypatch):
    """The exported validation figure is the whole-split score best_model/'s weights got during training (export
    scores only the test split), and it equals scoring the published folder afresh."""
    import hwlm.training.export as export
    from transformers import AutoModelForCausalLM

    from hwlm.data import load_prepared
    from hwlm.evaluation import evaluate_perplexity

    scored, real = [], export.evaluate_perplexity
    monkeypatch.setattr(export, "evaluate_perplexity", lambda model, tokens, **kw: scored.append(len(tokens)) or real(model, tokens, **kw))
    out = tmp_path / "run"
    results = train_main(lstm_flags(prepared, out, "--max_train_steps", "6", "--checkpointing_steps", "no"))
    data = load_prepared(prepared)
    assert scored == [len(data.stream_tensor("test"))]
    again = evaluate_perplexity(AutoModelForCausalLM.from_pretrained(out), data.stream_tensor("validation"),
                                batch_size=2, bptt=8, pad_token_id=0)
    assert results["validation_loss"] == pytest.approx(again["loss"], rel=1e-6)
    assert results["validation_num_tokens"] == again["num_tokens"]
    # a partial validation (--max_eval_tokens) is not the validation figure: export scores the whole split
    scored.clear()
    train_main(lstm_flags(prepared, tmp_path / "partial", "--max_train_steps", "6", "--checkpointing_steps", "no",
                          "--max_eval_tokens", "20"))
    assert scored == [len(data.stream_tensor("validation")), len(data.stream_tensor("test"))]
