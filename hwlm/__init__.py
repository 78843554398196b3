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
from pathlib import Path
from typing import Any, Callable

from . import models
from .models import MODEL_CLASS_NAMES

__version__ = "0.1.0"

__all__ = [name for name in models.__all__ if name != "MODEL_CLASSES"]

_CONFIG_AUTO = "transformers.models.auto.configuration_auto"
_MODELING_AUTO = "transformers.models.auto.modeling_auto"
#: transformers' Auto modules seen fully imported (by `_register` or after their execution)
_auto_ready: set[str] = set()
#: (Auto class name, model type) pairs registered so far; "AutoConfig" for the configs
_registered: set[tuple[str, str]] = set()
#: hwlm modules executing right now: while one is, registration imports no further hwlm module (it would meet
#: the half-executed one through its imports); the last to finish registers what is left
_executing: set[str] = set()


def _class(name: str) -> Any:
    """``hwlm.models.<name>``, or None while its module is still executing (an import cycle through transformers:
    ``modeling_transformer`` imports ``transformers.modeling_layers``, which imports ``AutoModel``)."""
    module_name = f"{models.__name__}.{models._MODULE_OF[name]}"
    module = sys.modules.get(module_name)
    if module is None:
        if _executing:
            return None
        module = importlib.import_module(module_name)
    return getattr(module, name, None)


def _register_ready() -> None:
    """Register every hwlm class whose Auto module and defining module are both fully imported.

    Called after `import hwlm` and after each of transformers' Auto modules and hwlm's model files is executed,
    so that whichever comes last does the registration; registering twice is harmless (``exist_ok``).
    """
    import transformers

    for model_type, (config_name, auto_classes) in MODEL_CLASS_NAMES.items():
        if _CONFIG_AUTO in _auto_ready and ("AutoConfig", model_type) not in _registered:
            config_class = _class(config_name)
            if config_class is not None:
                _registered.add(("AutoConfig", model_type))
                transformers.AutoConfig.register(model_type, config_class, exist_ok=True)
                config_class.register_for_auto_class()
        if _MODELING_AUTO not in _auto_ready or ("AutoConfig", model_type) not in _registered:
            continue
        for auto_name, model_name in auto_classes.items():
            if (auto_name, model_type) in _registered:
                continue
            model_class = _class(model_name)
            if model_class is None:
                continue
            _registered.add((auto_name, model_type))
            getattr(transformers, auto_name).register(_class(config_name), model_class, exist_ok=True)
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
        ours = module.__name__.startswith(__name__ + ".")
        if ours:
            _executing.add(module.__name__)
        try:
            self._loader.exec_module(module)
        finally:
            _executing.discard(module.__name__)
        self._then()

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, is_package, ... of the real loader
        return getattr(self._loader, name)


class _RegisterWhenImported(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that finds nothing itself: when transformers' Auto modules or hwlm's model files
    are first imported, it runs `_register_ready` right after them; it leaves ``sys.meta_path`` once all is done."""

    def __init__(self, names: set[str]):
        self.names = names
        self._lock = threading.Lock()

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        with self._lock:
            if name not in self.names:
                return None
            self.names.discard(name)
            if not self.names and self in sys.meta_path:
                sys.meta_path.remove(self)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RunAfterExec(spec.loader, lambda: self._after(name))
                return spec
        return None

    @staticmethod
    def _after(name: str) -> None:
        if name in (_CONFIG_AUTO, _MODELING_AUTO):
            _auto_ready.add(name)
        _register_ready()


def _register() -> None:
    _auto_ready.update(name for name in (_CONFIG_AUTO, _MODELING_AUTO) if name in sys.modules)
    watch = {name for name in (_CONFIG_AUTO, _MODELING_AUTO) if name not in _auto_ready}
    # every file of hwlm.models, helpers included: any of them may be the one executing when transformers' Auto
    # module arrives (see `_executing`)
    files = {path.stem for path in Path(models.__file__).parent.glob("*.py") if path.stem != "__init__"}
    watch |= {f"{models.__name__}.{module}" for module in files} - set(sys.modules)
    if _auto_ready:  # transformers' Auto classes are already loaded: register now
        _register_ready()
    if _auto_ready != {_CONFIG_AUTO, _MODELING_AUTO}:  # otherwise everything is registered already
        sys.meta_path.insert(0, _RegisterWhenImported(watch))


_register()


def __getattr__(name: str) -> Any:
    if name in models.__all__:
        value = getattr(models, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
