"""Loading a model folder someone else may have written: sizes checked first, code-carrying pickles refused.

``AutoModelForCausalLM.from_pretrained`` reads a ``pytorch_model.bin`` with ``torch.load(weights_only=True)``,
which refuses a crafted pickle (good) with an ``UnpicklingError`` and a page of advice to turn the protection
off (not good for a command line); a config with absurd sizes ends in a torch overflow. `load_causal_lm` turns
both into one-line `ValueError`s the commands report as user errors.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from hwlm.errors import UserError

__all__ = ["load_causal_lm"]

# weights + a copy while loading, in float32
LOAD_BYTES_PER_PARAMETER = 8


def load_causal_lm(name_or_path: str, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)`` after `hwlm.model_sizes.check_model_size`.

    Raises:
        ValueError: the model would not fit in memory, or a pickled weights file holds objects other than
            tensors (loading it would run code from the file).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers the Auto classes)
    from hwlm.model_sizes import check_model_size

    trust = {"trust_remote_code": kwargs["trust_remote_code"]} if "trust_remote_code" in kwargs else {}
    check_model_size(AutoConfig.from_pretrained(name_or_path, **trust), bytes_per_parameter=LOAD_BYTES_PER_PARAMETER,
                     purpose="load")
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except pickle.UnpicklingError:
        weights = [p.name for p in Path(name_or_path).glob("*.bin")] if Path(name_or_path).is_dir() else []
        raise UserError(
            f"{name_or_path!r}: {', '.join(weights) or 'its weights file'} holds objects other than tensors, so "
            "loading it would run code from the file; refusing it. Use a folder whose weights are model.safetensors "
            "(hwlm-train writes those), or one from a source you trust."
        ) from None
