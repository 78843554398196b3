"""hwlm: word-level RNN, LSTM and Transformer language models for the Hugging Face stack.

Importing hwlm registers its three model types with the transformers Auto classes (the only import-time side
effect), so `AutoConfig.for_model("hwlm_lstm", ...)` and `AutoModelForCausalLM.from_pretrained(folder)` work.
"""

import transformers
from transformers import AutoConfig

from . import models
from .models import *  # noqa: F403  (the public classes, listed in models.__all__)
from .models import MODEL_CLASSES

__version__ = "0.1.0"


def _register() -> None:
    for model_type, (config_class, auto_classes) in MODEL_CLASSES.items():
        AutoConfig.register(model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        for auto_name, model_class in auto_classes.items():
            getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
            # save_pretrained then copies the defining files into the folder and writes `auto_map` naming every
            # class registered here, so the folder loads with trust_remote_code=True where hwlm is not installed.
            model_class.register_for_auto_class(auto_name)


_register()

__all__ = [name for name in models.__all__ if name != "MODEL_CLASSES"]
