"""Model building from run settings: which config, which weights, and what the model can do.

Below `hwlm.training`, `hwlm.evaluation` and the commands (it imports none of them): ``hwlm-train`` builds its
model here, ``hwlm-gradflow`` builds the same models, and the settings check (`hwlm.training.arguments.
check_settings`) asks `resolve_config` what a run would build before any data is read or any process group
exists.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml

from hwlm.errors import UserError

__all__ = [
    "supports_state_carrying", "check_tokenizer_fits", "parse_config_overrides", "check_config_overrides", "resolve_config",
    "check_model_settings", "declared_config_fields", "skeleton_model", "check_fits", "build_model",
]


def supports_state_carrying(model) -> bool:
    """True when the model returns a state that can be fed back to continue a stream: hwlm's ``carries_state``
    capability, declared by each model family (a property of the instance: the Transformer carries state only with
    segment memory). Training, evaluation, test-time adaptation and the benchmarks all ask here.
    """
    return bool(getattr(model, "carries_state", False))


def parse_config_overrides(value: str | dict | None) -> dict[str, Any]:
    """``'a=1,b=true'`` or a mapping -> ``{"a": 1, "b": True}`` (values parsed as YAML scalars)."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in re.split(r",(?![^\[]*\])", value):  # commas inside [..] belong to a list value
        if not item.strip():
            continue
        if "=" not in item:
            raise UserError(f"config_overrides item {item!r} is not key=value (got {value!r})")
        key, val = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(val.strip())
    return out


def check_config_overrides(overrides: dict[str, Any], config_class: type) -> None:
    """Refuse config keys that ``config_class`` does not define, naming the closest valid field.

    A ``PreTrainedConfig`` accepts any keyword and stores it, so a misspelt ``hiden_size=64`` would otherwise
    be written into ``config.json`` while the model keeps the default width.
    """
    import dataclasses

    valid = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    valid |= set(config_class().to_dict())
    _refuse_unknown_keys(overrides, valid, config_class.__name__, config_class.model_type)


def _refuse_unknown_keys(overrides: dict[str, Any], valid: set[str] | frozenset[str], class_name: str,
                         model_type: str) -> None:
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(
                f"config_overrides key {key!r} is not a field of {class_name} ({model_type}); "
                f"{hint}Valid fields are documented in the config's docstring."
            )


def declared_config_fields(model_type: str) -> frozenset[str] | None:
    """The fields hwlm's config class for ``model_type`` declares (its own and its hwlm base classes'), read from
    the class bodies in ``hwlm/models/configuration_*.py`` without importing them (transformers' config module
    imports torch: seconds). None for a model type that is not hwlm's.

    These are what ``--config_overrides`` may set for an hwlm family: every architecture and regularisation field,
    the vocabulary and special-token ids, ``use_cache``; not transformers' generic fields (``dtype``,
    ``output_hidden_states``, ``id2label``, ...), which no training run sets through the config.
    """
    import ast
    from pathlib import Path

    from hwlm.models import MODEL_CLASS_NAMES

    if model_type not in MODEL_CLASS_NAMES:
        return None
    classes: dict[str, tuple[list[str], set[str]]] = {}  # class name -> (base class names, annotated fields)
    for path in Path(__file__).parent.joinpath("models").glob("configuration_*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                fields = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
                classes[node.name] = ([b.id for b in node.bases if isinstance(b, ast.Name)], fields)
    found, todo = set(), [MODEL_CLASS_NAMES[model_type][0]]
    while todo:
        bases, fields = classes[todo.pop()]
        found |= fields
        todo += [b for b in bases if b in classes]
    return frozenset(found)


def _overrides(model_args) -> dict[str, Any]:
    return parse_config_overrides(model_args.config_overrides)


def _registered_config_class(model_type: str) -> type:
    from transformers import CONFIG_MAPPING

    import hwlm  # noqa: F401  (registers the Auto classes)

    if model_type not in CONFIG_MAPPING:
        raise UserError(f"--model_type {model_type!r} is not registered; use one of "
                         "hwlm_rnn, hwlm_lstm, hwlm_transformer")
    return CONFIG_MAPPING[model_type]


def resolve_config(model_args, **fields):
    """The config ``model_args`` names (``--model_name_or_path``, ``--config_name`` or ``--model_type`` +
    ``--config_overrides``), with ``fields`` (e.g. ``vocab_size``) set on a fresh one. Reads no weights.

    Raises:
        ValueError: ``--model_type`` is not registered or the config class refuses a value.
    """
    from transformers import AutoConfig

    import hwlm  # noqa: F401  (registers the Auto classes)

    overrides = _overrides(model_args)
    if model_args.model_name_or_path:
        return AutoConfig.from_pretrained(model_args.model_name_or_path)
    if model_args.config_name:
        return AutoConfig.from_pretrained(model_args.config_name, **overrides)
    _registered_config_class(model_args.model_type)
    return AutoConfig.for_model(model_args.model_type, **{**fields, **overrides})


def check_model_settings(model_args) -> None:
    """Refuse config override keys the model's config class does not define (before any compute)."""
    overrides = _overrides(model_args)
    if not overrides:
        return
    from_folder = model_args.model_name_or_path or model_args.config_name
    declared = None if from_folder else declared_config_fields(model_args.model_type)
    if declared is not None:  # an hwlm family: checked from its declared fields, before transformers is imported
        from hwlm.models import MODEL_CLASS_NAMES

        _refuse_unknown_keys(overrides, declared, MODEL_CLASS_NAMES[model_args.model_type][0], model_args.model_type)
        return
    from transformers import AutoConfig

    import hwlm  # noqa: F401  (registers the Auto classes)

    if from_folder:
        config_class = type(AutoConfig.from_pretrained(from_folder))
    else:
        config_class = _registered_config_class(model_args.model_type)
    check_config_overrides(overrides, config_class)


def skeleton_model(config):
    """The model ``config`` builds, on the meta device: its class and capabilities without memory or compute.

    Capabilities can depend on the config (the Transformer carries state only with segment memory), so the
    settings check asks an instance rather than the class.
    """
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def check_fits(config, *, vocab_size: int | None = None, block_size: int | None = None,
               batching: str | None = None, model=None) -> None:
    """Refuse a config that cannot serve this run.

    Args:
        vocab_size: the tokenizer's size; the model's ``vocab_size`` must be at least that.
        block_size: the training block length (``--batching blocks``); at most ``max_position_embeddings``.
        batching / model: ``"streams"`` needs a model (instance) that carries state.
    Raises:
        ValueError: naming the value, the limit and the fix.
    """
    if vocab_size is not None and config.vocab_size < vocab_size:
        raise UserError(
            f"the tokenizer has {vocab_size} tokens but the model's vocab_size is {config.vocab_size}: ids >= "
            f"{config.vocab_size} would index past the embedding. Use the tokenizer the model was built for, or a "
            f"config with vocab_size >= {vocab_size} (a fresh model takes vocab_size from the tokenizer)."
        )
    max_pos = getattr(config, "max_position_embeddings", None)
    if block_size is not None and max_pos is not None and block_size > max_pos:
        raise UserError(
            f"--block_size {block_size} is above the model's max_position_embeddings={max_pos}; lower --block_size "
            f"to at most {max_pos} or raise max_position_embeddings (--config_overrides max_position_embeddings=...)."
        )
    if batching == "streams" and model is not None and not supports_state_carrying(model):
        raise UserError(
            f"--batching streams carries the recurrent state across windows, but {type(model).__name__} does not "
            "carry state (supports_state_carrying is False). Use --batching blocks for this model."
        )


def build_model(model_args, tokenizer, *, block_size: int | None = None, batching: str = "streams"):
    """Create the model: from ``--model_name_or_path`` weights, a ``--config_name`` or ``--model_type`` + overrides.

    ``vocab_size`` of a fresh model comes from the tokenizer. Raises ``ValueError`` when the tokenizer's
    ids do not fit the model's ``vocab_size``, when ``block_size`` exceeds ``max_position_embeddings``,
    or when ``batching="streams"`` is asked of a model that cannot carry state.
    """
    from transformers import AutoModelForCausalLM

    specials = {
        k: getattr(tokenizer, k)
        for k in ("pad_token_id", "eos_token_id", "bos_token_id")
        if getattr(tokenizer, k, None) is not None
    }
    config = resolve_config(model_args, vocab_size=len(tokenizer), **specials)
    check_fits(config, vocab_size=len(tokenizer), block_size=block_size)
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    else:
        model = AutoModelForCausalLM.from_config(config)
    # generate() stops at the end of a line and pads with <pad> unless told otherwise
    for key in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, key, None) is not None:
            setattr(model.generation_config, key, getattr(tokenizer, key))
    check_fits(config, batching=batching, model=model)
    return model


def check_tokenizer_fits(tokenizer: Any, vocab_size: int, folder: str) -> None:
    """Refuse a tokenizer with more entries than the model has embeddings (its ids would index past them).

    Args:
        tokenizer: a transformers tokenizer (``len(tokenizer)`` entries, special tokens included).
        vocab_size (`int`): the model's ``config.vocab_size``.
        folder (`str`): the model folder, named in the message.
    Raises:
        ValueError: naming both sizes and the fix.
    """
    if len(tokenizer) > vocab_size:
        raise UserError(
            f"the tokenizer of {folder!r} has {len(tokenizer)} entries but the model's vocab_size is {vocab_size}: "
            "they were not trained together. Save the tokenizer the model was trained with into the folder "
            "(tokenizer.save_pretrained)."
        )
