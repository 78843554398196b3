"""Exporting a trained run: the best model scored on validation and test, written as a Hub-ready folder."""

from __future__ import annotations

import json
from typing import Any

from hwlm.evaluation import evaluate_perplexity
from hwlm.model_building import supports_state_carrying
from hwlm.training.run import BEST_DIR, CURVES_FILE, Run, no_library_bars, plot_curves

__all__ = ["export", "final_model", "score_splits"]


def final_model(run: Run):
    """The weights to publish: ``best_model/`` (best validation loss) when it exists, else the last weights."""
    from transformers import AutoModelForCausalLM

    best_dir = run.out / BEST_DIR
    if (best_dir / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(best_dir).to(run.accelerator.device)
    return run.unwrapped


def score_splits(run: Run, model, known: dict[str, dict] | None = None) -> dict[str, Any]:
    """The run's summary and ``{split}_{loss,perplexity,num_tokens}`` for the validation and test splits present.

    ``known`` maps a split to the `evaluate_perplexity` result this model already has on it (the same weights,
    scored with the same settings during training): that split is not scored again."""
    results: dict[str, Any] = {
        "train_steps": run.state.global_step,
        "epochs": run.state.epoch,
        "best_step": run.state.best_step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "eval_method": "stream" if supports_state_carrying(model) else "sliding_window",
    }
    for split in ("validation", "test"):
        try:
            tokens = run.prepared.stream_tensor(split)
        except (KeyError, ValueError):
            continue
        scored = (known or {}).get(split) or evaluate_perplexity(model, tokens, **run.evaluation_kwargs())
        for key, value in scored.items():
            results[f"{split}_{key}"] = value
    return results


def export(run: Run) -> dict[str, Any]:
    """Score the best model on validation and test and write the Hub-ready folder (and upload it if asked).

    ``--push_to_hub`` without ``--hub_model_id`` is refused by `hwlm.training.arguments.check_settings` before
    the run starts, so nothing here can fail on the main process alone while the other ranks wait.
    """
    from hwlm.hub import example_prompt, push_folder, save_hub_folder

    args, out = run.args, run.out
    with no_library_bars():
        final = final_model(run)
    # best_model/ holds the weights validated at best_step; their whole-split score then is the validation figure
    known = {"validation": run.best_validation} if final is not run.unwrapped and run.best_validation else None
    results = score_splits(run, final, known)
    if run.accelerator.is_main_process:
        (out / "all_results.json").write_text(json.dumps(results, indent=2))
        plot_curves(run.state, out / CURVES_FILE)
        prompt_source = run.prepared.stream_tensor("validation") if "validation_perplexity" in results else []
        card = dict(
            model_name=args.hub_model_id.split("/")[-1] if args.hub_model_id else out.name,
            results=results,
            command=run.command,
            settings=run.settings,
            dataset_name=getattr(run.data_args, "dataset_name", None),
            license=args.license,
            repo_id=args.hub_model_id,
            num_parameters=results["num_parameters"],
            prompt=example_prompt(run.tokenizer, prompt_source),
        )
        with no_library_bars():
            save_hub_folder(out, final, run.tokenizer, card=card)
        summary = ", ".join(f"{k} {v:.2f}" for k, v in results.items() if k.endswith("perplexity"))
        print(f"done: {summary}; model folder: {out}")
        if args.push_to_hub:
            url = push_folder(out, args.hub_model_id, private=args.hub_private_repo)
            print(f"pushed to {url}")
    run.accelerator.wait_for_everyone()
    return results
