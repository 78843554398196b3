"""Size sanity before allocation: a model's parameter count and training memory, estimated from its config.

A config with ``num_hidden_layers=10**6`` builds a million layers (minutes, then ``bad_alloc``) and one with
``hidden_size=10**9`` overflows torch's size arithmetic even on the meta device. Neither is a model anyone can
train here, so the count is estimated first, without building the full model: skeletons (meta device, no
memory) with one and two layers give the size of the layer-independent part and of one layer, and the layer
count scales the second. The estimate is compared with the memory this machine has available.
"""

from __future__ import annotations

import copy

from hwlm.errors import UserError

__all__ = ["TRAIN_BYTES_PER_PARAMETER", "available_memory", "check_model_size", "estimate_parameters"]

# float32 weights, their gradients and Adam's two moments; SGD needs less, so this errs on the safe side
TRAIN_BYTES_PER_PARAMETER = 16
_SIZE_FIELDS = ("vocab_size", "embedding_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "memory_length")


def _sizes(config) -> str:
    return ", ".join(f"{k}={getattr(config, k)}" for k in _SIZE_FIELDS if getattr(config, k, None) is not None)


def _count(config, layers: int) -> int:
    from hwlm.model_building import skeleton_model

    small = copy.deepcopy(config)
    if hasattr(small, "num_hidden_layers"):
        small.num_hidden_layers = layers
    return sum(p.numel() for p in skeleton_model(small).parameters())


def estimate_parameters(config) -> int:
    """The number of parameters ``config`` builds, from two meta-device skeletons (one and two layers).

    Raises:
        ValueError: the sizes overflow torch's arithmetic (a tensor of more than 2**63 bytes).
    """
    try:
        one, two = _count(config, 1), _count(config, 2)
    except RuntimeError as err:  # "Storage size calculation overflowed"
        raise UserError(
            f"the model's sizes ({_sizes(config)}) are too large to build ({' '.join(str(err).split())[:100]}); "
            "lower hidden_size / num_hidden_layers / the vocabulary."
        ) from None
    return one + (max(getattr(config, "num_hidden_layers", 1) or 1, 1) - 1) * (two - one)


def available_memory() -> int:
    """Bytes of memory this machine can give a new allocation now (``psutil``, which accelerate requires)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_model_size(config, *, bytes_per_parameter: int = TRAIN_BYTES_PER_PARAMETER,
                     available: int | None = None, purpose: str = "train") -> int:
    """Refuse a config whose model cannot fit in memory, before anything is allocated; return its parameter count.

    Args:
        config: a model config.
        bytes_per_parameter (`int`): memory per parameter for ``purpose`` (16 to train with Adam in float32).
        available (`int`, *optional*): bytes available; default `available_memory`.
        purpose (`str`): named in the message.
    Raises:
        ValueError: naming the parameter count, the memory needed and available, and the sizes to lower.
    """
    count = estimate_parameters(config)
    need = count * bytes_per_parameter
    available = available_memory() if available is None else available
    if need > available:
        raise UserError(
            f"the model would have {count:,} parameters ({_sizes(config)}): about {need / 2**30:,.1f} GiB to "
            f"{purpose} it, but {available / 2**30:,.1f} GiB of memory is available. Lower hidden_size, "
            "num_hidden_layers or the vocabulary size."
        )
    return count
