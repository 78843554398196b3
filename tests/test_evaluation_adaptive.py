"""Dynamic evaluation and the neural cache: reductions to plain evaluation, a naive reference, gains on repeated
text, the model left untouched, and a real two-process run of hwlm-eval."""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import _toy  # noqa: F401  (one intra-op thread)
import hwlm  # noqa: F401
from _toy import lstm_flags, prepare_toy
from hwlm.adaptive import (
    DynamicEvalSettings,
    NeuralCache,
    NeuralCacheSettings,
    adaptive_loss_sums,
    cache_distribution,
    evaluate_adaptive,
    gradient_square_sums,
    gradient_statistics,
    pointer_weights,
    rms_from_square_sums,
    tune_on_validation,
)
from hwlm.evaluation import evaluate_perplexity

REPO = Path(__file__).resolve().parents[1]
V = 30


def tiny(model_type, **kw):
    torch.manual_seed(0)
    extra = {"num_attention_heads": 2, "max_position_embeddings": 32} if model_type == "hwlm_transformer" else {}
    cfg = AutoConfig.for_model(model_type, vocab_size=V, hidden_size=32, num_hidden_layers=1, **extra, **kw)
    return AutoModelForCausalLM.from_config(cfg).eval()


def repeated_text(repeats=6, length=40, seed=1):
    """A random passage read `repeats` times: everything after the first reading is predictable from the past."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (length,), generator=g).repeat(repeats)


def random_text(n=2000, seed=2):
    return torch.randint(0, V, (n,), generator=torch.Generator().manual_seed(seed))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


SEGMENT = 8
STATS = DynamicEvalSettings(dynamic_eval_segment_length=SEGMENT, dynamic_eval_stats_batch_size=4)


@pytest.mark.parametrize("model_type", ["hwlm_lstm", "hwlm_transformer"])
def test_dynamic_eval_with_learning_rate_zero_is_plain_evaluation_exactly(model_type):
    model = tiny(model_type)
    tokens = random_text(203, seed=3)
    rms = gradient_statistics(model, random_text(), STATS)
    zero = DynamicEvalSettings(dynamic_eval_learning_rate=0.0, dynamic_eval_segment_length=SEGMENT)
    res = evaluate_adaptive(model, tokens, dynamic=zero, rms=rms, batch_size=2)
    plain = evaluate_perplexity(model, tokens, batch_size=2, bptt=SEGMENT, window=32, stride=SEGMENT)
    assert res["num_tokens"] == plain["num_tokens"] == 202
    assert res["dynamic_eval_loss"] == plain["loss"]  # exact: the decay term is 0 at the trained weights
    # and a real learning rate does change the figure (the comparison above is not vacuous)
    moved = evaluate_adaptive(model, tokens, dynamic=STATS, rms=rms, batch_size=2)
    assert moved["dynamic_eval_loss"] != plain["loss"]


@pytest.mark.parametrize(
    "model_type,kw",
    [("hwlm_lstm", {}), ("hwlm_transformer", {}), ("hwlm_lstm", {"adaptive_softmax_cutoffs": [10, 20]})],
)
def test_cache_with_lambda_zero_is_plain_evaluation(model_type, kw):
    model = tiny(model_type, **kw)
    tokens = random_text(203, seed=3)
    res = evaluate_adaptive(model, tokens, cache=NeuralCacheSettings(cache_lambda=0.0), bptt=7, stride=8)
    plain = evaluate_perplexity(model, tokens, batch_size=1, bptt=7, window=32, stride=8)
    assert res["num_tokens"] == plain["num_tokens"]
    # the cache path sums log_softmax in float64, the model's loss in float32: equal to rounding
    assert res["neural_cache_loss"] == pytest.approx(plain["loss"], rel=1e-6, abs=0)
    other = evaluate_adaptive(model, tokens, cache=NeuralCacheSettings(cache_lambda=0.3), bptt=7, stride=8)
    assert res["neural_cache_loss"] != pytest.approx(other["neural_cache_loss"])


@pytest.mark.parametrize(
    "model_type,init,lr", [("hwlm_lstm", {"initializer_range": 1.0}, 3e-3), ("hwlm_transformer", {}, 1e-3)]
)
def test_both_methods_beat_plain_evaluation_on_repeated_passages(model_type, init, lr):
    # An untrained model with large recurrent weights (or attention) already has states that identify the recent
    # context, so a repeated passage is where both methods must help: the cache points at the earlier reading,
    # dynamic evaluation learns it.
    model = tiny(model_type, **init)
    tokens = repeated_text()
    plain = evaluate_perplexity(model, tokens, batch_size=1, bptt=SEGMENT, window=32, stride=SEGMENT)["perplexity"]
    rms = gradient_statistics(model, random_text(), STATS)
    dyn = DynamicEvalSettings(dynamic_eval_learning_rate=lr, dynamic_eval_segment_length=SEGMENT)
    cache = NeuralCacheSettings(cache_size=100, cache_theta=3.0, cache_lambda=0.5)
    with_dyn = evaluate_adaptive(model, tokens, dynamic=dyn, rms=rms, cache=cache)
    with_cache = evaluate_adaptive(model, tokens, cache=cache, bptt=SEGMENT, stride=SEGMENT)
    assert with_dyn["dynamic_eval_perplexity"] < 0.9 * plain
    assert with_cache["neural_cache_perplexity"] < 0.5 * plain
    assert with_dyn["dynamic_eval_neural_cache_perplexity"] < 0.5 * plain


@pytest.mark.parametrize("model_type", ["hwlm_lstm", "hwlm_transformer"])
def test_dynamic_eval_never_changes_the_model_passed_in(model_type):
    model = tiny(model_type)
    before = weights(model)
    rms = gradient_statistics(model, random_text(), STATS)
    evaluate_adaptive(model, repeated_text(), dynamic=DynamicEvalSettings(dynamic_eval_learning_rate=1e-2), rms=rms,
                      cache=NeuralCacheSettings())
    after = weights(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def naive_cache_nll(features, log_p_vocab, targets, *, cache_size, theta, lam):
    """Per-position reference for one stream: features (N, D), log_p_vocab (N, V), targets (N,)."""
    total, dists = 0.0, []
    for t in range(len(targets)):
        p = log_p_vocab[t].double().exp()
        past = range(max(0, t - cache_size), t)
        p_cache = torch.zeros(p.shape, dtype=torch.float64)
        if len(past):
            scores = torch.stack([theta * features[t].double() @ features[i].double() for i in past])
            attn = torch.softmax(scores, 0)
            for a, i in zip(attn, past):
                p_cache[targets[i]] += a
            p = (1 - lam) * p + lam * p_cache
        dists.append(p_cache)
        total -= math.log(p[targets[t]])
    return total, torch.stack(dists)


def test_cache_matches_a_naive_per_position_loop():
    g = torch.Generator().manual_seed(0)
    n, d, size, theta, lam = 23, 6, 5, 0.7, 0.3
    features = torch.randn(n, d, generator=g)
    log_p_vocab = torch.log_softmax(torch.randn(n, V, generator=g), -1)
    targets = torch.randint(0, V, (n,), generator=g)
    expected, expected_dists = naive_cache_nll(features, log_p_vocab, targets, cache_size=size, theta=theta, lam=lam)
    cache = NeuralCache(size, [0.1, theta], [0.0, lam])
    total = torch.zeros(2, 2, dtype=torch.float64)
    for start, stop in ((0, 4), (4, 13), (13, n)):  # segments of different lengths, history carried across them
        seg = slice(start, stop)
        total += cache.score(features[None, seg], log_p_vocab[seg].gather(-1, targets[seg, None]).T, targets[None, seg])
    assert float(total[1, 1]) == pytest.approx(expected, rel=1e-6)
    assert float(total[0, 0]) == pytest.approx(-float(log_p_vocab.gather(-1, targets[:, None]).sum()), rel=1e-6)
    # the full distribution from pointer_weights, in one segment, equals the loop's p_cache at every position
    w = pointer_weights(features[None], features[None], torch.ones(1, n, dtype=torch.bool), num_past=0,
                        cache_size=size, theta=theta)
    dists = cache_distribution(w, targets[None], V)[0]
    assert torch.allclose(dists.double(), expected_dists, atol=1e-6)
    assert dists[0].sum() == 0 and torch.allclose(dists[1:].sum(-1), torch.ones(n - 1))


def test_padding_neither_scored_nor_cached():
    features = torch.randn(2, 4, 3)
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, -100, -100]])
    log_p = torch.full((2, 4), -1.0)
    cache = NeuralCache(10, [1.0], [0.0])
    assert float(cache.score(features, log_p, targets)) == pytest.approx(6.0)
    assert cache.key_valid.tolist() == [[True] * 4, [True, True, False, False]]


def test_settings_are_checked_where_they_are_defined():
    with pytest.raises(ValueError, match="--dynamic_eval_learning_rate must be >= 0, got -1"):
        DynamicEvalSettings(dynamic_eval_learning_rate=-1)
    with pytest.raises(ValueError, match="--dynamic_eval_segment_length must be >= 1, got 0"):
        DynamicEvalSettings(dynamic_eval_segment_length=0)
    with pytest.raises(ValueError, match=r"--cache_lambda must be in \[0, 1\), got 1"):
        NeuralCacheSettings(cache_lambda=1.0)
    with pytest.raises(ValueError, match="--cache_size must be >= 1, got 0"):
        NeuralCacheSettings(cache_size=0)
    with pytest.raises(ValueError, match="needs `dynamic` and/or `cache`"):
        evaluate_adaptive(tiny("hwlm_lstm"), random_text(50))
    with pytest.raises(ValueError, match=r"segment length \(40\) must not exceed the sliding window \(32\)"):
        evaluate_adaptive(tiny("hwlm_transformer"), random_text(50), dynamic=DynamicEvalSettings(
            dynamic_eval_segment_length=40), rms={})


def test_tuning_picks_the_grid_point_with_the_lowest_validation_perplexity():
    model = tiny("hwlm_lstm", initializer_range=1.0)
    rms = gradient_statistics(model, random_text(), STATS)
    tuned = tune_on_validation(
        model, repeated_text(), bptt=SEGMENT, dynamic=DynamicEvalSettings(dynamic_eval_segment_length=SEGMENT),
        rms=rms, learning_rates=[0.0, 3e-3], cache=NeuralCacheSettings(cache_size=100), thetas=[0.0, 3.0],
        lambdas=[0.0, 0.5],
    )
    assert tuned["dynamic"].dynamic_eval_learning_rate == 3e-3
    assert (tuned["cache"].cache_theta, tuned["cache"].cache_lambda) == (3.0, 0.5)
    cache_rows = [r for r in tuned["grid"] if r["method"] == "neural_cache"]
    assert len(cache_rows) == 4 and min(cache_rows, key=lambda r: r["perplexity"])["cache_theta"] == 3.0
    check = evaluate_adaptive(model, repeated_text(), cache=tuned["cache"], bptt=SEGMENT)
    assert check["neural_cache_perplexity"] == pytest.approx(min(r["perplexity"] for r in cache_rows), rel=1e-9)


# ------------------------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hwlm.cli.train import run

    root = tmp_path_factory.mktemp("adaptive")
    prepared = prepare_toy(root)
    out = root / "lstm"
    run(lstm_flags(prepared, out, "--per_device_eval_batch_size", "1"))
    return prepared, out


ADAPT_FLAGS = ["--dynamic_eval", "--neural_cache", "--dynamic_eval_stats_batch_size", "4",
               "--dynamic_eval_learning_rate", "1e-3",
               "--cache_size", "50", "--cache_theta", "0.5", "--cache_lambda", "0.2"]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_eval_command_reports_plain_and_adapted_figures_and_leaves_the_folder_alone(trained, tmp_path):
    from hwlm.cli.evaluate import run

    prepared, out = trained
    before = {f.name: sha256(f) for f in out.iterdir() if f.is_file()}
    # Grids without 0: every chosen setting adapts (a learning rate or a cache weight of 0 would change nothing).
    res = run(["--model_name_or_path", str(out), "--prepared_data_dir", str(prepared), "--bptt", "13",
               "--output_file", str(tmp_path / "eval.json"), *ADAPT_FLAGS, "--tune_on", "validation",
               "--dynamic_eval_learning_rate_grid", "1e-3,3e-3",
               "--cache_theta_grid", "0.5", "--cache_lambda_grid", "0.1,0.2"])
    assert {f.name: sha256(f) for f in out.iterdir() if f.is_file()} == before  # safetensors, config, tokenizer
    saved = json.loads((tmp_path / "eval.json").read_text())
    from hwlm.data import load_prepared

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    for split in ("validation", "test"):
        # the plain figure is the library's, on the same model and data
        plain = evaluate_perplexity(model, load_prepared(prepared).stream_tensor(split), bptt=13, batch_size=1)
        assert saved[f"{split}_perplexity"] == pytest.approx(plain["perplexity"], rel=1e-6)
        # each method changed the figure, and the two together differ from dynamic evaluation alone
        adapted = [saved[f"{split}_{method}perplexity"] for method in ("neural_cache_", "dynamic_eval_",
                                                                       "dynamic_eval_neural_cache_")]
        assert len({saved[f"{split}_perplexity"], *adapted}) == 4, adapted
    assert saved["tuning"]["split"] == "validation" and len(saved["tuning"]["grid"]) == 2 + 2
    settings = saved["adaptive_settings"]
    # the test figures come from the settings the validation grid chose, scored once
    best_lr = min((r for r in saved["tuning"]["grid"] if r["method"] == "dynamic_eval"), key=lambda r: r["perplexity"])
    assert settings["dynamic_eval"]["dynamic_eval_learning_rate"] == best_lr["dynamic_eval_learning_rate"]
    assert res["test_dynamic_eval_perplexity"] == saved["test_dynamic_eval_perplexity"]


def test_eval_command_refuses_tuning_without_a_method(trained):
    from hwlm.cli.evaluate import run

    prepared, out = trained
    with pytest.raises(ValueError, match="--tune_on tunes --dynamic_eval and/or --neural_cache"):
        run(["--model_name_or_path", str(out), "--prepared_data_dir", str(prepared), "--tune_on", "validation"])


def sharded_reference(out, prepared, split, num_processes=2):
    """What `num_processes` processes must report: each adapts on its own part from the trained weights, with the
    cache of its own part, and the sums are added."""
    from hwlm.adaptive import DynamicEvaluator
    from hwlm.data import load_prepared

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    data = load_prepared(prepared)
    settings = DynamicEvalSettings(dynamic_eval_learning_rate=1e-3, dynamic_eval_stats_batch_size=4)
    # identical on every process: the squared-gradient sums of both halves of the training split, added
    parts = [gradient_square_sums(model, data.stream_tensor("train"), settings, num_processes=num_processes,
                                  process_index=r) for r in range(num_processes)]
    rms = rms_from_square_sums({k: sum(p[0][k] for p in parts) for k in parts[0][0]}, sum(p[1] for p in parts))
    tokens, total, count = data.stream_tensor(split), 0.0, 0
    for rank in range(num_processes):
        sums = adaptive_loss_sums(model, tokens, length=settings.dynamic_eval_segment_length,
                                  num_processes=num_processes, process_index=rank,
                                  evaluator=DynamicEvaluator(model, rms, settings), cache=NeuralCache(50, [0.5], [0.2]))
        total, count = total + float(sums["cache"][0, 0]), count + sums["num_tokens"]
    return math.exp(total / count), count


def test_two_processes_with_accelerate_launch(trained, tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`: two real processes on CPU (with
    `--cpu` accelerate's simple launcher starts one process), each adapting on its own half."""
    prepared, out = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(REPO / "scripts" / "evaluate.py"), "--model_name_or_path", str(out), "--prepared_data_dir",
           str(prepared), "--splits", "test", "--output_file", str(tmp_path / "eval.json"), *ADAPT_FLAGS]
    from _toy import run_process_group

    proc = run_process_group(cmd, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["num_processes"] == 2
    expected, count = sharded_reference(out, prepared, "test", num_processes=2)
    assert res["test_dynamic_eval_num_tokens"] == count == res["test_num_tokens"]
    assert res["test_dynamic_eval_neural_cache_perplexity"] == pytest.approx(expected, rel=1e-5)
    # one process would have reported something else: the match above says both halves were adapted and summed
    assert sharded_reference(out, prepared, "test", num_processes=1)[0] != pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "model_type,kw",
    [
        ("hwlm_lstm", {"embedding_size": 16, "tie_word_embeddings": True}),  # projected to the embedding width
        ("hwlm_transformer", {}),  # after the final LayerNorm
        ("hwlm_lstm", {"adaptive_softmax_cutoffs": [10, 20]}),
    ],
)
def test_cache_keys_are_what_the_output_layer_reads(model_type, kw):
    from hwlm.adaptive import _head_inputs

    model = tiny(model_type, **kw)
    x = random_text(12)[None]
    with torch.no_grad(), _head_inputs(model) as seen:
        logits = model(input_ids=x).logits  # (1, 12, V)
    features = seen[-1].reshape(1, 12, -1)
    head = model.lm_head
    again = head(features) if isinstance(head, torch.nn.Linear) else head.log_prob(features[0])[None]
    assert torch.allclose(again, logits, atol=1e-6)


def test_a_diverging_learning_rate_loses_the_grid_search_instead_of_crashing():
    model = tiny("hwlm_transformer")
    rms = gradient_statistics(model, random_text(), STATS)
    tuned = tune_on_validation(
        model, repeated_text(), dynamic=DynamicEvalSettings(dynamic_eval_segment_length=SEGMENT), rms=rms,
        learning_rates=[1e3, 1e-3], cache=NeuralCacheSettings(cache_size=100), thetas=[1.0], lambdas=[0.1],
    )
    rows = [r for r in tuned["grid"] if r["method"] == "dynamic_eval"]
    assert not rows[0]["perplexity"] < 1e6  # diverged: inf or NaN
    assert tuned["dynamic"].dynamic_eval_learning_rate == 1e-3
