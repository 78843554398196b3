"""Scoring a saved model folder: what `hwlm-eval` runs once its flags are parsed (and what the quickstart calls).

`evaluate_folder` loads the folder with the Auto classes, loads or prepares the data, scores each split with the
model's protocol (`hwlm.evaluation.perplexity`) and, when asked, with test-time adaptation
(`adaptive_results`: dynamic evaluation and/or the neural cache, tuned on validation first); it prints the figures,
writes them as JSON and can re-render the folder's model card. Heavy libraries are imported when work starts, so
`hwlm-eval --help` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hwlm.settings import parse_grid
from hwlm.errors import UserError

__all__ = ["evaluate_folder", "adaptive_results", "update_card"]


def say(accelerator, message: str) -> None:
    """Progress on the main process (an adapted pass can take minutes)."""
    if accelerator.is_main_process:
        print(message, flush=True)


def evaluate_folder(eval_args, data_args=None, dynamic_args=None, cache_args=None) -> dict:
    """Load ``eval_args.model_name_or_path`` with the Auto classes and score the requested splits.

    ``eval_args`` are `hwlm-eval`'s settings (``hwlm.cli.evaluate.EvalArguments``), ``data_args`` the data flags used
    when there is no ``prepared_data_dir``, ``dynamic_args`` / ``cache_args`` the test-time methods' settings.

    The plain figures are ``{split}_perplexity``; ``--neural_cache`` / ``--dynamic_eval`` add
    ``{split}_neural_cache_perplexity``, ``{split}_dynamic_eval_perplexity`` and, with both,
    ``{split}_dynamic_eval_neural_cache_perplexity`` (see `adaptive_results`).
    """
    from accelerate import Accelerator

    import hwlm  # noqa: F401  (registers the Auto classes)
    from hwlm import data as hdata
    from hwlm.evaluation.perplexity import evaluate_perplexity
    from hwlm.model_building import check_tokenizer_fits, supports_state_carrying
    from hwlm.safe_load import load_causal_lm
    from hwlm.tokenization import load_tokenizer

    accelerator = Accelerator()
    tokenizer = load_tokenizer(eval_args.model_name_or_path)
    model = load_causal_lm(eval_args.model_name_or_path).to(accelerator.device)  # sizes and pickles checked
    check_tokenizer_fits(tokenizer, model.config.vocab_size, eval_args.model_name_or_path)
    if eval_args.prepared_data_dir:
        prepared = hdata.load_prepared(eval_args.prepared_data_dir, tokenizer=tokenizer)
    else:
        with accelerator.main_process_first():
            corpus = hdata.load_corpus(data_args)
            prepared = hdata.prepare_datasets(
                corpus, tokenizer, block_size=data_args.block_size,
                num_proc=data_args.preprocessing_num_workers, overwrite_cache=data_args.overwrite_cache,
            )
    if prepared.vocab_size is not None and prepared.vocab_size > model.config.vocab_size:
        raise UserError(
            f"the data has ids up to vocab_size {prepared.vocab_size} but the model's vocab_size is "
            f"{model.config.vocab_size}; evaluate with the tokenizer the model was trained with"
        )
    results = {"model": str(eval_args.model_name_or_path),
               "eval_method": (eval_args.eval_protocol if eval_args.eval_protocol != "auto"
                               else "stream" if supports_state_carrying(model) else "sliding_window"),
               "num_processes": accelerator.num_processes}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    splits = [s.strip() for s in eval_args.splits.split(",") if s.strip()]
    for split in splits:
        start = time.perf_counter()
        res = evaluate_perplexity(
            model, prepared.stream_tensor(split), accelerator=accelerator,
            batch_size=eval_args.per_device_eval_batch_size, bptt=eval_args.bptt,
            window=eval_args.eval_window, stride=eval_args.eval_stride, pad_token_id=pad_id,
            protocol=eval_args.eval_protocol,
        )
        for key, value in res.items():
            results[f"{split}_{key}"] = value
        results[f"{split}_seconds"] = time.perf_counter() - start
    if eval_args.dynamic_eval or eval_args.neural_cache:
        results.update(
            adaptive_results(model, prepared, splits, eval_args, dynamic_args, cache_args, accelerator, pad_id)
        )
    if accelerator.is_main_process:
        for split in splits:
            for method in ("", "neural_cache_", "dynamic_eval_", "dynamic_eval_neural_cache_"):
                if f"{split}_{method}perplexity" in results:
                    label = method.rstrip("_").replace("_", " ") or "plain"
                    print(f"{split} ({label}): perplexity {results[f'{split}_{method}perplexity']:.2f} "
                          f"over {results[f'{split}_num_tokens']} tokens")
        if eval_args.output_file:
            Path(eval_args.output_file).write_text(json.dumps(results, indent=2))
        if eval_args.update_model_card:
            update_card(eval_args.model_name_or_path, results, tokenizer, prepared)
    return results


def update_card(folder: str, results: dict, tokenizer, prepared) -> None:
    """Re-render the folder's card with this evaluation's figures (`hwlm.hub.refresh_model_card`)."""
    from hwlm.hub import example_prompt, refresh_model_card

    scores = {k: v for k, v in results.items() if k.endswith(("_perplexity", "_loss", "_num_tokens"))}
    try:
        prompt = example_prompt(tokenizer, prepared.stream_tensor("validation"))
    except (KeyError, ValueError):  # no validation split prepared
        prompt = None
    path = refresh_model_card(folder, {**scores, "eval_method": results["eval_method"]}, prompt=prompt)
    print(f"model card updated: {path}")


def adaptive_results(model, prepared, splits, eval_args, dynamic, cache, accelerator, pad_id) -> dict:
    """Dynamic evaluation and/or the neural cache on ``splits``, tuned on validation first with ``--tune_on``.

    Keys: ``{split}_neural_cache_{loss,perplexity,seconds}``, ``{split}_dynamic_eval_{loss,perplexity,seconds}``,
    ``{split}_dynamic_eval_neural_cache_{loss,perplexity}`` (same pass as dynamic evaluation),
    ``dynamic_eval_stats_seconds``, ``adaptive_settings`` (what was used) and ``tuning`` (the grid).
    """
    from dataclasses import asdict

    from hwlm.evaluation.dynamic_eval import DynamicEvalSettings, gradient_statistics
    from hwlm.evaluation.neural_cache import NeuralCacheSettings
    from hwlm.evaluation.test_time import evaluate_adaptive, tune_on_validation

    dynamic = (dynamic or DynamicEvalSettings()) if eval_args.dynamic_eval else None
    cache = (cache or NeuralCacheSettings()) if eval_args.neural_cache else None
    common = dict(accelerator=accelerator, batch_size=eval_args.per_device_eval_batch_size,
                  window=eval_args.eval_window, pad_token_id=pad_id)
    out, rms = {}, None
    if dynamic is not None:
        start = time.perf_counter()
        rms = gradient_statistics(model, prepared.stream_tensor("train"), dynamic, accelerator=accelerator,
                                  window=eval_args.eval_window, pad_token_id=pad_id)
        out["dynamic_eval_stats_seconds"] = time.perf_counter() - start
        say(accelerator, f"gradient statistics of the training split: {out['dynamic_eval_stats_seconds']:.0f} s")
    cache_alone = combined = cache
    if eval_args.tune_on:
        start = time.perf_counter()
        tuned = tune_on_validation(
            model, prepared.stream_tensor(eval_args.tune_on), bptt=eval_args.bptt, stride=eval_args.eval_stride,
            dynamic=dynamic, rms=rms, learning_rates=parse_grid(eval_args.dynamic_eval_learning_rate_grid),
            decay_rates=parse_grid(eval_args.dynamic_eval_decay_rate_grid), cache=cache,
            thetas=parse_grid(eval_args.cache_theta_grid), lambdas=parse_grid(eval_args.cache_lambda_grid),
            max_tokens=eval_args.tune_max_tokens, **common,
        )
        dynamic, cache_alone, combined = tuned["dynamic"], tuned["cache"], tuned["combined_cache"]
        out["tuning"] = {"split": eval_args.tune_on, "num_tokens": tuned["num_tokens"], "grid": tuned["grid"],
                         "seconds": time.perf_counter() - start}
        for row in tuned["grid"]:
            say(accelerator, "tuning: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                    for k, v in row.items()))
    for split in splits:
        tokens = prepared.stream_tensor(split)
        runs = []
        if cache_alone is not None:
            runs.append(("neural_cache", dict(cache=cache_alone, bptt=eval_args.bptt, stride=eval_args.eval_stride)))
        if dynamic is not None:
            runs.append(("dynamic_eval", dict(dynamic=dynamic, rms=rms, cache=combined)))
        for method, kwargs in runs:
            res = evaluate_adaptive(model, tokens, **kwargs, **common)
            label = method.replace("_", " ") + (" + cache" if method == "dynamic_eval" and combined else "")
            say(accelerator, f"{split} ({label}): {res['seconds']:.0f} s")
            for key, value in res.items():
                out[f"{split}_{method}_{key}" if key in ("num_tokens", "seconds") else f"{split}_{key}"] = value
    out["adaptive_settings"] = {
        "dynamic_eval": asdict(dynamic) if dynamic is not None else None,
        "neural_cache": asdict(cache_alone) if cache_alone is not None else None,
        "dynamic_eval_neural_cache": asdict(combined) if dynamic is not None and combined is not None else None,
    }
    return out
