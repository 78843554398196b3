"""hwlm: word-level RNN, LSTM and Transformer language models for the Hugging Face stack.

Importing hwlm registers its three model types with the transformers Auto classes (the only import-time side
effect), so `AutoConfig.for_model("hwlm_lstm", ...)` and `AutoModelForCausalLM.from_pretrained(folder)` work.

Importing hwlm is cheap. The model classes are lazy attributes (``hwlm.HwlmLstmForCausalLM`` imports the modeling
file on first use), and the registration happens as soon as transformers' Auto machinery is there: at once when
``transformers.models.auto.configuration_auto`` / ``modeling_auto`` are already imported, otherwise right after
they are (``from transformers import AutoConfig`` imports the first, ``AutoModelForCausalLM`` the second). Both
import torch, and registering a model class needs the class itself (transformers' Auto mappings take no lazy
entries), so deferring the registration to that moment is what lets ``hwlm-train --help`` and a settings error
answer without importing torch, while every way of reaching an Auto class still finds hwlm's models.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from typing import Any, Callable

from . import models
from .models import MODEL_CLASS_NAMES

__version__ = "0.1.0"

__all__ = [name for name in models.__all__ if name != "MODEL_CLASSES"]

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"


def _register_configs() -> None:
    """``AutoConfig.register`` for every hwlm model type (imports the configuration files, hence transformers)."""
    from transformers import AutoConfig

    for model_type, (config_name, _) in MODEL_CLASS_NAMES.items():
        config_class = getattr(models, config_name)
        AutoConfig.register(model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()


def _register_models() -> None:
    """``AutoModel*.register`` for every hwlm model class (imports the modeling files)."""
    import transformers

    for config_name, auto_classes in MODEL_CLASS_NAMES.values():
        config_class = getattr(models, config_name)
        for auto_name, model_name in auto_classes.items():
            model_class = getattr(models, model_name)
            getattr(transformers, auto_name).register(config_class, model_class, exist_ok=True)
            # save_pretrained then copies the defining files into the folder and writes `auto_map` naming every
            # class registered here, so the folder loads with trust_remote_code=True where hwlm is not installed.
            model_class.register_for_auto_class(auto_name)


class _RunAfterExec(importlib.abc.Loader):
    """Wraps a module's loader: executes the module, then calls ``then`` (a post-import hook)."""

    def __init__(self, loader: importlib.abc.Loader, then: Callable[[], None]):
        self._loader, self._then = loader, then

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._then()

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, is_package, ... of the real loader
        return getattr(self._loader, name)


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that finds nothing itself: it hooks the registration onto transformers' Auto
    modules when they are first imported, and leaves ``sys.meta_path`` once both are done."""

    def __init__(self, pending: dict[str, Callable[[], None]]):
        self.pending = pending
        self._lock = threading.Lock()

    def find_spec(self, name, path, target=None):
        if name not in self.pending:
            return None
        with self._lock:
            then = self.pending.pop(name, None)
            if not self.pending and self in sys.meta_path:
                sys.meta_path.remove(self)
        if then is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RunAfterExec(spec.loader, then)
                return spec
        return None


def _register() -> None:
    steps = {_CONFIG_AUTO: _register_configs, _MODELING_AUTO: _register_models}
    pending = {}
    for module_name, step in steps.items():
        if module_name in sys.modules:  # transformers' Auto classes are already loaded: register now
            step()
        else:
            pending[module_name] = step
    if pending:
        sys.meta_path.insert(0, _RegisterWhenImported(pending))


_register()


def __getattr__(name: str) -> Any:
    if name in models.__all__:
        value = getattr(models, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
