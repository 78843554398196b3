"""Validation helpers shared by the hwlm configurations.

Every check raises a `ValueError` that names the field, the value received and what is
allowed, so a bad config fails at construction time instead of deep inside torch.
This file travels with saved models (``trust_remote_code``), so it imports only the
standard library.
"""

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any


class InvalidInput(ValueError):
    """A config value or a model input the caller can fix (hwlm's commands report it as one line, like
    `hwlm.errors.UserError`; this file travels with saved models, so it cannot import hwlm)."""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_positive_int(name: str, value: Any) -> None:
    """`value` must be an `int` (not a `bool`) greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"`{name}` must be a positive integer, got {_describe(value)}.")


def check_optional_positive_int(name: str, value: Any) -> None:
    """Like `check_positive_int`, but `None` (meaning: use the default) is allowed."""
    if value is not None:
        check_positive_int(name, value)


def check_probability(name: str, value: Any) -> None:
    """A dropout rate: a number in [0, 1). A rate of 1 would drop everything."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise InvalidInput(f"`{name}` must be a dropout probability in [0, 1), got {_describe(value)}.")


def check_positive_float(name: str, value: Any) -> None:
    """`value` must be a number greater than zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"`{name}` must be a positive number, got {_describe(value)}.")


def check_non_negative_float(name: str, value: Any) -> None:
    """`value` must be a number, zero or more (a regularisation weight: 0 turns it off)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidInput(f"`{name}` must be a number >= 0 (0 turns it off), got {_describe(value)}.")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    """`value` must be one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InvalidInput(f"`{name}` must be one of {', '.join(map(repr, allowed))}; got {value!r}.")


def check_token_id(name: str, value: Any, vocab_size: int) -> None:
    """A special token id: `None`, or an int in [0, vocab_size). Lists are allowed for `eos_token_id`."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < vocab_size:
            raise InvalidInput(
                f"`{name}` must be a token id in [0, vocab_size={vocab_size}) or None, got {_describe(value)}. "
                "Set it from the tokenizer (e.g. `tokenizer.pad_token_id`) after fixing `vocab_size`."
            )


def check_output_layer_and_token_ids(config) -> None:
    """Checks every hwlm family shares: the adaptive softmax settings and the special token ids."""
    check_positive_float("adaptive_softmax_div_value", config.adaptive_softmax_div_value)
    check_cutoffs("adaptive_softmax_cutoffs", config.adaptive_softmax_cutoffs, config.vocab_size)
    if config.adaptive_softmax_cutoffs is not None and config.tie_word_embeddings:
        raise InvalidInput(
            "`tie_word_embeddings=True` cannot be combined with `adaptive_softmax_cutoffs`: the adaptive softmax has "
            "its own per-cluster output matrices. Set `tie_word_embeddings=False` or drop the cutoffs."
        )
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        check_token_id(name, getattr(config, name), config.vocab_size)


def check_cutoffs(name: str, value: Any, vocab_size: int) -> None:
    """Adaptive-softmax cutoffs: `None`, or strictly increasing ints in (0, vocab_size)."""
    if value is None:
        return
    if (
        not isinstance(value, (list, tuple))
        or not value
        or any(isinstance(c, bool) or not isinstance(c, int) for c in value)
        or any(b <= a for a, b in zip(value, value[1:]))
        or value[0] <= 0
        or value[-1] >= vocab_size
    ):
        raise InvalidInput(
            f"`{name}` must be a non-empty, strictly increasing list of ints in (0, vocab_size={vocab_size}), "
            f"got {_describe(value)}. Example for a 10k vocabulary: [2000, 6000]."
        )


def update_from_string(config: Any, update_str: str, update_one: Callable[[str], None]) -> None:
    """
    `PreTrainedConfig.update_from_string` (what transformers' `run_clm.py --config_overrides` calls) for fields whose
    value is `None` too: transformers converts a value by the type of the current one and refuses `None`
    (`memory_length=16` on a config without memory). Here such a field takes its declared type (`int | None` → int),
    `none`/`null` sets any optional field back to `None`, and every other key goes to transformers' `update_one`.
    """
    hints = {f.name: f.type for f in dataclasses.fields(type(config))}  # hwlm's own fields hold real types
    for item in update_str.split(","):
        key, _, text = item.partition("=")
        if not hasattr(config, key):
            raise InvalidInput(f"key {key} isn't in the original config dict")
        optional = type(None) in typing.get_args(hints.get(key))
        if optional and text.strip().lower() in ("none", "null"):
            setattr(config, key, None)
        elif optional and getattr(config, key) is None:
            setattr(config, key, _parse_as(key, text, hints[key]))
        else:
            update_one(item)


def _parse_as(key: str, text: str, annotation: Any) -> Any:
    """`text` as the first scalar type `annotation` allows (bool, int, float, then str)."""
    allowed = typing.get_args(annotation)
    for kind in (bool, int, float):
        if kind in allowed:
            try:
                return {"true": True, "false": False}[text.lower()] if kind is bool else kind(text)
            except (KeyError, ValueError):
                continue
    if str in allowed:
        return text
    raise InvalidInput(f"can't set `{key}` from the string {text!r}: it takes {annotation}.")
