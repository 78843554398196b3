"""Issue 10: a training run's console output is quiet and useful: no repeated library warnings or bars, one line
per evaluation, and a progress bar showing loss, perplexity, learning rate and tokens/s."""

from __future__ import annotations

import json
import logging

from _toy import TINY_LSTM, lstm_flags, prepare_toy


def test_console_shows_one_line_per_evaluation_and_no_repeated_library_output(tmp_path, capfd, caplog):
    from hwlm.cli.train import main

    prepared = prepare_toy(tmp_path / "toy")
    out = tmp_path / "run"
    flags = [f for f in lstm_flags(prepared, out, "--num_train_epochs", "2", "--eval_steps", "3",
                                   "--checkpointing_steps", "2", "--config_overrides",
                                   TINY_LSTM + ",tie_word_embeddings=true,embedding_size=16")
             if f != "--disable_tqdm"]
    with caplog.at_level(logging.WARNING):
        main(flags)
    console = capfd.readouterr()
    text = console.out + console.err + caplog.text
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "eval"]
    checkpoints = list((out / "checkpoints").iterdir())
    assert len(evals) >= 3 and checkpoints  # several evaluations and checkpoints of a tied model happened
    lines = [ln for ln in text.splitlines() if ": validation loss " in ln]
    assert len(lines) == len(evals), lines
    assert f"step {evals[0]['step']}: validation loss {evals[0]['loss']:.3f}, ppl {evals[0]['perplexity']:.2f}" in lines[0]
    assert "Removed shared tensor" not in text  # accelerate's warning, once per checkpoint of tied weights
    assert "Writing model shards" not in text and "Loading weights" not in text  # a bar per best-model save
    bar = console.err.replace("\r", "\n").splitlines()
    assert any(all(k in ln for k in ("loss=", "ppl=", "lr=", "tok_s=")) for ln in bar), console.err[-800:]
