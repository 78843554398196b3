"""
The transformers names hwlm uses that are not part of transformers' documented public API, each with the reason it
must stay, so there is one place to look when a release moves one (CI runs the suite on the newest releases and on
the lowest ones `pyproject.toml` allows). `tests/test_public_api.py` fails if such a name appears anywhere else.

* `config._attn_implementation` — which attention kernel a model runs (eager, SDPA, flash, ...). transformers sets it
  from `from_pretrained(attn_implementation=...)` / `model.set_attn_implementation(...)` and its own models read it
  to pick their kernel (GPT-2 reads `self.config._attn_implementation`); there is no public getter.
* A copy of the config with `_attn_implementation = "eager"` — `transformers.masking_utils.create_causal_mask` picks
  the mask's format (boolean, additive float, block mask) from the config and takes no argument for it. hwlm needs
  the additive float form where it adds to the mask: ALiBi's distance bias, and the eager fallback that returns
  attention probabilities under an SDPA model (`output_attentions=True`).

Declarations transformers documents for model authors are not listed here: `_tied_weights_keys`,
`_no_split_modules`, `_supports_sdpa`, `_supports_flash_attn`, `_supports_attention_backend`,
`_can_compile_fullgraph`, `_init_weights`, `_gradient_checkpointing_func`, `_auto_class`.

This file travels with saved models (`trust_remote_code`), so it imports only the standard library.
"""

import copy
from typing import Any


def attention_implementation(config: Any) -> str:
    """The attention kernel the model was loaded with: "eager", "sdpa", "flash_attention_2", ..."""
    return config._attn_implementation


def eager_mask_config(config: Any) -> Any:
    """A shallow copy of `config` for which transformers' mask builders return the additive float mask (B, 1, T, S)."""
    if attention_implementation(config) == "eager":
        return config
    eager = copy.copy(config)
    eager._attn_implementation = "eager"
    return eager
