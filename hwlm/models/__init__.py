"""hwlm's model families. Each family's configuration and modeling files import only torch, transformers and
their siblings, so `save_pretrained` can copy them into a model folder (`trust_remote_code`).

The public names are lazy module attributes (PEP 562, the pattern of transformers' own ``_LazyModule``): importing
this package costs nothing, and ``hwlm.models.HwlmLstmForCausalLM`` imports ``modeling_recurrent`` (and through
it torch and ``transformers.modeling_utils``) on first use. The commands rely on this to answer ``--help`` and
settings errors without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name → the sibling module that defines it
_MODULE_OF = {
    "HwlmLstmConfig": "configuration_lstm",
    "HwlmRecurrentConfig": "configuration_recurrent",
    "HwlmRnnConfig": "configuration_rnn",
    "HwlmTransformerConfig": "configuration_transformer",
    "HwlmCausalLMOutput": "modeling_common",
    **{name: "modeling_recurrent" for name in (
        "HwlmLstmForCausalLM",
        "HwlmLstmForSequenceClassification",
        "HwlmLstmModel",
        "HwlmRecurrentForCausalLM",
        "HwlmRecurrentForSequenceClassification",
        "HwlmRecurrentModel",
        "HwlmRecurrentPreTrainedModel",
        "HwlmRnnForCausalLM",
        "HwlmRnnForSequenceClassification",
        "HwlmRnnModel",
        "RecurrentState",
    )},
    **{name: "modeling_transformer" for name in (
        "HwlmTransformerForCausalLM",
        "HwlmTransformerForSequenceClassification",
        "HwlmTransformerModel",
        "HwlmTransformerPreTrainedModel",
    )},
}

#: model type → (config class name, {transformers Auto class name: model class name}), by name so that reading it
#: imports nothing; `MODEL_CLASSES` is the same table with the classes themselves.
MODEL_CLASS_NAMES: dict[str, tuple[str, dict[str, str]]] = {
    "hwlm_rnn": (
        "HwlmRnnConfig",
        {
            "AutoModel": "HwlmRnnModel",
            "AutoModelForCausalLM": "HwlmRnnForCausalLM",
            "AutoModelForSequenceClassification": "HwlmRnnForSequenceClassification",
        },
    ),
    "hwlm_lstm": (
        "HwlmLstmConfig",
        {
            "AutoModel": "HwlmLstmModel",
            "AutoModelForCausalLM": "HwlmLstmForCausalLM",
            "AutoModelForSequenceClassification": "HwlmLstmForSequenceClassification",
        },
    ),
    "hwlm_transformer": (
        "HwlmTransformerConfig",
        {
            "AutoModel": "HwlmTransformerModel",
            "AutoModelForCausalLM": "HwlmTransformerForCausalLM",
            "AutoModelForSequenceClassification": "HwlmTransformerForSequenceClassification",
        },
    ),
}

__all__ = ["MODEL_CLASSES", *sorted(_MODULE_OF)]


def __getattr__(name: str) -> Any:
    if name == "MODEL_CLASSES":
        # model type → (config class, {transformers Auto class name: model class}) for every model hwlm registers
        value = {
            model_type: (__getattr__(config_name), {auto: __getattr__(model) for auto, model in autos.items()})
            for model_type, (config_name, autos) in MODEL_CLASS_NAMES.items()
        }
    elif name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
