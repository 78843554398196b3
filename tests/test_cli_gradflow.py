"""End-to-end runs of the real ``hwlm-gradflow`` entry point at toy scale."""

from __future__ import annotations

import json
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from _toy import write_toy_corpus
from hwlm.cli.gradflow import main, run


def flag_list(files: dict) -> list[str]:
    return [item for key, value in files.items() for item in (f"--{key}", value)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    return flag_list(write_toy_corpus(tmp_path_factory.mktemp("text")))


def test_several_models_overlaid_folder_and_config(tmp_path, corpus):
    import hwlm  # noqa: F401

    folder = tmp_path / "saved_rnn"
    config = AutoConfig.for_model("hwlm_rnn", cell_type="tanh", vocab_size=120, hidden_size=8, num_hidden_layers=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    out = tmp_path / "out"
    main([
        "--model", str(folder), "--model", "hwlm_lstm:hidden_size=8,num_hidden_layers=2",
        "--sequence_length", "12", "--num_sequences", "2", "--output_dir", str(out), "--block_size", "8", *corpus,
    ])
    result = json.loads((out / "gradflow.json").read_text())
    assert (out / "gradflow.png").stat().st_size > 1000
    assert [m["label"] for m in result["models"]] == ["saved_rnn", "hwlm_lstm:hidden_size=8,num_hidden_layers=2"]
    rnn, lstm = result["models"]
    assert set(lstm["norms"]) >= {"embedding", "layer1.h", "layer1.c", "layer2.h", "layer2.c"}
    assert all(len(series) == 12 for series in lstm["norms"].values())
    assert result["sequence"]["split"] == "validation" and result["sequence"]["text"].startswith("w")
    assert 0 < rnn["decay_per_step"]["layer1.h"] < 1  # a tanh RNN at initialisation forgets
    assert lstm["diagnostics"]["layer1.forget_gate"] == pytest.approx(0.5, abs=0.05)


def test_random_tokens_and_bad_model(tmp_path, corpus):
    out = tmp_path / "random"
    main(["--model", "hwlm_transformer:hidden_size=8,num_hidden_layers=1,num_attention_heads=2,max_position_embeddings=16",
          "--random_tokens", "--sequence_length", "10", "--output_dir", str(out), *corpus])
    (flow,) = json.loads((out / "gradflow.json").read_text())["models"]
    assert flow["sequence_length"] == 10 and flow["norms"]["embedding"][9] > 0
    with pytest.raises(ValueError, match="neither a model folder"):
        run(["--model", str(tmp_path / "missing/folder"), "--output_dir", str(out), *corpus])
    with pytest.raises(ValueError, match="either --model"):
        run(["--output_dir", str(out), *corpus])
    with pytest.raises(ValueError, match="need"):
        run(["--model", "hwlm_rnn:hidden_size=4", "--sequence_length", "100000", "--output_dir", str(out), *corpus])


def test_compare_defaults_at_toy_scale(tmp_path, corpus):
    out = tmp_path / "compare"
    main([
        "--compare-defaults", "--hidden_size", "8", "--num_hidden_layers", "1", "--max_train_steps", "3",
        "--sequence_length", "10", "--bptt", "6", "--train_batch_size", "4", "--block_size", "12",
        "--output_dir", str(out), *corpus,
    ])
    result = json.loads((out / "gradflow_compare.json").read_text())
    assert (out / "gradflow_compare.png").is_file()
    labels = ["tanh RNN", "GRU", "LSTM", "Transformer", "Transformer + memory"]
    assert [m["label"] for m in result["at_init"]] == labels == [m["label"] for m in result["trained"]]
    assert all(result["training"][label]["train_steps"] == 3 for label in labels)
    # the same number of tokens per step for streams and blocks (6 * 4 = 24 = 2 blocks of 12)
    assert {result["training"][label]["tokens_per_step"] for label in labels} == {24}
    assert {m["hidden_size"] for m in result["at_init"]} == {8}
    # training changed the weights, hence the measured gradients
    assert result["at_init"][2]["norms"]["layer1.c"] != result["trained"][2]["norms"]["layer1.c"]
    assert torch.tensor(result["trained"][0]["norms"]["layer1.h"]).isfinite().all()
    # segment memory: streams of bptt windows, and no gradient across the detached window boundary
    memory = result["trained"][4]
    assert result["training"]["Transformer + memory"]["batching"] == "streams"
    assert memory["diagnostics"] == {"window": 6, "memory_length": 6, "max_gradient_before_window": 0.0}
    assert memory["norms"]["embedding"][6:] == [None] * 4 and None not in memory["norms"]["embedding"][:6]
