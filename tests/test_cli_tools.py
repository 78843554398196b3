"""hwlm-eval, hwlm-generate, signals and the quickstart script at toy scale."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from torch.optim.optimizer import register_optimizer_step_post_hook

from _toy import lstm_flags, prepare_toy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hwlm.cli.train import run

    root = tmp_path_factory.mktemp("tools")
    prepared = prepare_toy(root)
    out = root / "lstm"
    results = run(lstm_flags(prepared, out, "--per_device_eval_batch_size", "1"))
    return prepared, out, results


def test_eval_command_reproduces_the_training_figures(trained, tmp_path):
    from hwlm.cli.evaluate import run

    prepared, out, results = trained
    res = run(["--model_name_or_path", str(out), "--prepared_data_dir", str(prepared), "--bptt", "13",
                "--output_file", str(tmp_path / "eval.json")])
    assert res["test_perplexity"] == pytest.approx(results["test_perplexity"], rel=1e-5)
    assert json.loads((tmp_path / "eval.json").read_text())["validation_num_tokens"] == results["validation_num_tokens"]


def test_eval_refuses_data_prepared_with_another_tokenizer(trained, tmp_path):
    from hwlm.cli.evaluate import run
    from hwlm.tokenization import train_word_tokenizer

    prepared, out, _ = trained
    other = tmp_path / "other_model"
    other.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    train_word_tokenizer(["a b c d e"]).save_pretrained(other)
    with pytest.raises(ValueError, match="prepared with a different tokenizer"):
        run(["--model_name_or_path", str(other), "--prepared_data_dir", str(prepared)])


def test_generate_command_is_seeded(trained, capsys):
    from hwlm.cli.generate import run

    _, out, _ = trained
    argv = ["--model_name_or_path", str(out), "--prompt", "w1 w2", "--max_new_tokens", "12", "--temperature", "0.9",
            "--top_k", "20", "--top_p", "0.95", "--seed", "3"]
    first, second = run(argv), run(argv)
    assert first == second and first[0].startswith("w1 w2 ")
    assert len(first[0].split()) >= 3
    greedy = run(["--model_name_or_path", str(out), "--prompt", "w5", "--do_sample", "false", "--max_new_tokens", "4"])
    assert greedy[0].startswith("w5")
    with pytest.raises(ValueError, match="--temperature must be > 0"):
        run([*argv, "--temperature", "0"])


def test_sigint_saves_a_checkpoint_and_exits_cleanly(trained, tmp_path):
    from hwlm.cli.train import run
    from hwlm.training.checkpoint import validate_checkpoint

    prepared, _, _ = trained
    out = tmp_path / "sig"
    steps = []

    def interrupt_after_two_steps(optimizer, args, kwargs):
        # Ctrl-C in the middle of training: sent from inside the loop, so it never races the start-up on a slow machine.
        steps.append(optimizer)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when pytest runs in a background job
    hook = register_optimizer_step_post_hook(interrupt_after_two_steps)
    try:
        res = run(lstm_flags(prepared, out, "--num_train_epochs", "500", "--checkpointing_steps", "no"))
    finally:
        hook.remove()
    assert res["interrupted"] and res["step"] > 0
    manifest = validate_checkpoint(res["checkpoint"])
    assert manifest["step"] == res["step"]
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found, restored


def test_quickstart_script_end_to_end_at_toy_scale(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    res = quickstart.main(["--output_dir", str(tmp_path / "qs"), "--max_train_steps", "3",
                           "--config_overrides", "embedding_size=16,hidden_size=16,num_hidden_layers=1",
                           "--max_eval_tokens", "500", "--disable_tqdm"])
    printed = capsys.readouterr().out
    assert "test perplexity" in printed and f"model folder: {(tmp_path / 'qs').resolve()}" in printed
    assert res["test_perplexity"] > 1 and res["sample"]


def test_eval_protocol_chunks_scores_the_model_under_pytorch_examples_rule(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from hwlm.cli.evaluate import run
    from hwlm.data import load_prepared
    from hwlm.evaluation import evaluate_perplexity

    prepared, out, results = trained
    res = run(["--model_name_or_path", str(out), "--prepared_data_dir", str(prepared), "--splits", "test",
               "--eval_protocol", "chunks", "--eval_window", "7", "--per_device_eval_batch_size", "3"])
    assert res["eval_method"] == "chunks"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokens = load_prepared(prepared).stream_tensor("test")
    expected = evaluate_perplexity(model, tokens, protocol="chunks", batch_size=3, window=7)
    assert res["test_perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert res["test_perplexity"] != pytest.approx(results["test_perplexity"], rel=1e-4)  # the LSTM loses its state
    with pytest.raises(ValueError, match="--eval_protocol chunks scores the plain model only"):
        run(["--model_name_or_path", str(out), "--prepared_data_dir", str(prepared), "--eval_protocol", "chunks",
             "--neural_cache"])
