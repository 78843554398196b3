"""hwlm: word-level RNN, LSTM and Transformer language models for the Hugging Face stack.

Importing hwlm registers its three model types with the transformers Auto classes (the only import-time side
effect), so `AutoConfig.for_model("hwlm_lstm", ...)` and `AutoModelForCausalLM.from_pretrained(folder)` work.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .models import (
    MODEL_CLASSES,
    HwlmCausalLMOutput,
    HwlmLstmConfig,
    HwlmLstmForCausalLM,
    HwlmRecurrentConfig,
    HwlmRnnConfig,
    HwlmRnnForCausalLM,
    HwlmTransformerConfig,
    HwlmTransformerForCausalLM,
    RecurrentState,
)

__version__ = "0.1.0"


def _register() -> None:
    for model_type, (config_class, model_class) in MODEL_CLASSES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
        # save_pretrained then copies the defining files into the folder and writes `auto_map`, so the folder
        # loads with trust_remote_code=True where hwlm is not installed.
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForCausalLM")


_register()

__all__ = [
    "HwlmCausalLMOutput",
    "HwlmLstmConfig",
    "HwlmLstmForCausalLM",
    "HwlmRecurrentConfig",
    "HwlmRnnConfig",
    "HwlmRnnForCausalLM",
    "HwlmTransformerConfig",
    "HwlmTransformerForCausalLM",
    "RecurrentState",
]
