"""``hwlm-eval``: perplexity of a saved model folder on the validation and test splits.

Examples::

    hwlm-eval --model_name_or_path outputs/quickstart --prepared_data_dir outputs/quickstart-data
    hwlm-eval --model_name_or_path outputs/ptb --train_file ptb.train.txt --validation_file ptb.valid.txt \\
        --test_file ptb.test.txt --per_device_eval_batch_size 1
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import check_model_folder, check_tokenizer_fits, parse_command, run_main

PROG = "hwlm-eval"


@dataclass
class EvalArguments:
    """What to evaluate and how (see ``hwlm/evaluation.py`` for the method)."""

    model_name_or_path: str = field(metadata={"help": "A folder written by hwlm-train (or save_pretrained)."})
    prepared_data_dir: Optional[str] = field(
        default=None, metadata={"help": "A folder from hwlm-prepare; without it the data flags are prepared now."}
    )
    splits: str = field(default="validation,test", metadata={"help": "Comma-separated splits to score."})
    per_device_eval_batch_size: int = field(
        default=1,
        metadata={"help": "Parallel streams per process (state-carrying models; 1 = the literature's figure) "
                  "or windows per forward (sliding window)."},
    )
    bptt: int = field(default=100, metadata={"help": "Window length for streamed evaluation (speed only)."})
    eval_window: Optional[int] = field(
        default=None, metadata={"help": "Sliding window length; default max_position_embeddings."}
    )
    eval_stride: Optional[int] = field(default=None, metadata={"help": "Sliding window stride; default window // 2."})
    eval_protocol: str = field(
        default="auto",
        metadata={"help": "How a split is read (hwlm/evaluation.py): 'auto' (stream for state-carrying models, sliding "
                  "window otherwise), 'stream', 'sliding_window', or 'chunks' (pytorch/examples' evaluation: "
                  "--per_device_eval_batch_size streams in disjoint chunks of --eval_window tokens, default --bptt, "
                  "nothing carried), to score two models under one protocol.",
                  "choices": ["auto", "stream", "sliding_window", "chunks"]},
    )
    output_file: Optional[str] = field(default=None, metadata={"help": "Also write the results as JSON here."})
    update_model_card: bool = field(
        default=False,
        metadata={"help": "Render the folder's model card (README.md of an hwlm-train folder) again with these "
                  "figures: plain and, with --dynamic_eval / --neural_cache, adapted perplexities as separate metrics."},
    )
    dynamic_eval: bool = field(
        default=False,
        metadata={"help": "Also score with dynamic evaluation (Krause et al. 2018); see --dynamic_eval_*."},
    )
    neural_cache: bool = field(
        default=False, metadata={"help": "Also score with the neural cache (Grave et al. 2017); see --cache_*."}
    )
    tune_on: Optional[str] = field(
        default=None,
        metadata={"help": "'validation': pick the dynamic-evaluation learning rate (and decay rate) and the cache's "
                  "theta/lambda by grid search on the validation split, then score the splits once with them.",
                  "choices": ["validation"]},
    )
    tune_max_tokens: Optional[int] = field(
        default=None, metadata={"help": "Tune on the first N validation tokens only (faster; default all)."}
    )
    dynamic_eval_learning_rate_grid: str = field(
        default="1e-5,3e-5,1e-4,3e-4,1e-3", metadata={"help": "Learning rates tried by --tune_on."}
    )
    dynamic_eval_decay_rate_grid: Optional[str] = field(
        default=None, metadata={"help": "Decay rates tried by --tune_on (default: --dynamic_eval_decay_rate only)."}
    )
    cache_theta_grid: str = field(default="0.1,0.2,0.3,0.5,0.7,1.0", metadata={"help": "Thetas tried by --tune_on."})
    cache_lambda_grid: str = field(
        default="0.05,0.1,0.15,0.2,0.25,0.3", metadata={"help": "Lambdas tried by --tune_on."}
    )

    def __post_init__(self):
        for name in ("per_device_eval_batch_size", "bptt", "eval_window", "eval_stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be an integer >= 1, got {value}")
        if self.eval_protocol != "auto" and (self.dynamic_eval or self.neural_cache):
            raise ValueError(f"--eval_protocol {self.eval_protocol} scores the plain model only; drop it to use "
                             "--dynamic_eval / --neural_cache, which read each split as the model's default protocol")
        if self.tune_on is not None and not (self.dynamic_eval or self.neural_cache):
            raise ValueError("--tune_on tunes --dynamic_eval and/or --neural_cache; pass at least one of them")
        if self.tune_max_tokens is not None and self.tune_max_tokens < 2:
            raise ValueError(f"--tune_max_tokens must be >= 2, got {self.tune_max_tokens}")
        for name in ("dynamic_eval_learning_rate_grid", "dynamic_eval_decay_rate_grid", "cache_theta_grid",
                     "cache_lambda_grid"):
            value = getattr(self, name)
            try:
                parse_grid(value)
            except ValueError:
                raise ValueError(f"--{name} must be comma-separated numbers, got {value!r}") from None



def _say(accelerator, message: str) -> None:
    """Progress on the main process (an adapted pass can take minutes)."""
    if accelerator.is_main_process:
        print(message, flush=True)


def parse_grid(text: Optional[str]) -> list[float]:
    """'1e-5, 3e-5' -> [1e-5, 3e-5]; None or '' -> []."""
    return [float(v) for v in (text or "").split(",") if v.strip()]


def evaluate_folder(eval_args: EvalArguments, data_args=None, dynamic_args=None, cache_args=None) -> dict:
    """Load ``eval_args.model_name_or_path`` with the Auto classes and score the requested splits.

    The plain figures are ``{split}_perplexity``; ``--neural_cache`` / ``--dynamic_eval`` add
    ``{split}_neural_cache_perplexity``, ``{split}_dynamic_eval_perplexity`` and, with both,
    ``{split}_dynamic_eval_neural_cache_perplexity`` (see `adaptive_results`).
    """
    from accelerate import Accelerator

    import hwlm  # noqa: F401  (registers the Auto classes)
    from hwlm import data as hdata
    from hwlm.evaluation import evaluate_perplexity, supports_state_carrying
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
        raise ValueError(
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
            _update_card(eval_args.model_name_or_path, results, tokenizer, prepared)
    return results


def _update_card(folder: str, results: dict, tokenizer, prepared) -> None:
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

    from hwlm.adaptive import (DynamicEvalSettings, NeuralCacheSettings, evaluate_adaptive, gradient_statistics,
                               tune_on_validation)

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
        _say(accelerator, f"gradient statistics of the training split: {out['dynamic_eval_stats_seconds']:.0f} s")
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
            _say(accelerator, "tuning: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
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
            _say(accelerator, f"{split} ({label}): {res['seconds']:.0f} s")
            for key, value in res.items():
                out[f"{split}_{method}_{key}" if key in ("num_tokens", "seconds") else f"{split}_{key}"] = value
    out["adaptive_settings"] = {
        "dynamic_eval": asdict(dynamic) if dynamic is not None else None,
        "neural_cache": asdict(cache_alone) if cache_alone is not None else None,
        "dynamic_eval_neural_cache": asdict(combined) if dynamic is not None and combined is not None else None,
    }
    return out


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(EvalArguments, DataArguments, DynamicEvalSettings, NeuralCacheSettings)`` from the command line (flags, or a
    ``--config`` preset)."""
    from hwlm.settings import DataArguments, DynamicEvalSettings, NeuralCacheSettings

    return parse_command(
        (EvalArguments, DataArguments, DynamicEvalSettings, NeuralCacheSettings), argv, prog=PROG, description=__doc__
    )


def run(argv: Optional[list[str]] = None) -> dict:
    """Parse the flags and score the splits; returns the results mapping."""
    eval_args, data_args, dynamic_args, cache_args = parse(argv)
    check_model_folder(eval_args.model_name_or_path)
    if eval_args.update_model_card:
        from hwlm.hub import check_card_folder

        check_card_folder(eval_args.model_name_or_path)  # before minutes of evaluation, not after
    return evaluate_folder(eval_args, data_args, dynamic_args, cache_args)


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag, folder, data file or tokenizer is a one-line error, exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
