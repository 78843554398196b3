"""Evaluation: perplexity comparable with the literature, test-time adaptation, and scoring a saved folder.

    perplexity.py     the split read as the model reads it: streams with the state carried (recurrent models, the
                      memory Transformer), a sliding window (the Transformer), or pytorch/examples' disjoint chunks
    segments.py       how the test-time methods read a split: segments in order, one forward, the head's inputs
    dynamic_eval.py   dynamic evaluation (Krause et al. 2018): gradient statistics and the per-segment update
    neural_cache.py   the neural cache pointer (Grave et al. 2017)
    test_time.py      one pass with either or both methods, and their tuning on validation
    run.py            `evaluate_folder`: what `hwlm-eval` runs once its flags are parsed

The names below are lazy attributes (as transformers' own packages do): importing ``hwlm.evaluation.run`` for the
command line's settings costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → the module of this package that defines it
_MODULE_OF = {
    **dict.fromkeys(("evaluate_perplexity", "describe_protocol", "stream_loss_sum", "sliding_window_loss_sum",
                     "PROTOCOLS", "sliding_windows", "sliding_window_batches", "supports_state_carrying"), "perplexity"),
    **dict.fromkeys(("DynamicEvalSettings", "DynamicEvaluator", "gradient_statistics", "gradient_square_sums",
                     "rms_from_square_sums"), "dynamic_eval"),
    **dict.fromkeys(("NeuralCacheSettings", "NeuralCache", "pointer_weights", "cache_distribution"), "neural_cache"),
    **dict.fromkeys(("adaptive_loss_sums", "adaptive_pass", "evaluate_adaptive", "tune_on_validation"), "test_time"),
    **dict.fromkeys(("evaluate_folder", "adaptive_results", "update_card"), "run"),
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
