"""hwlm builds on transformers' public API: private names move between minor releases (5.25 stopped reading
`_is_stateful`, which broke assisted-decoding refusal). The few that must stay live in `hwlm/models/hf_internals.py`
with their reasons; these tests fail when one leaks elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

HWLM = Path(__file__).resolve().parents[1] / "hwlm"
INTERNALS = HWLM / "models" / "hf_internals.py"

#: Private transformers attributes hwlm relied on (or could be tempted to), and where each went.
PRIVATE_ATTRIBUTES = {
    "_is_stateful": "the cache's public is_croppable decides assisted decoding; hwlm's own flag is carries_state",
    "_supports_default_dynamic_cache": "generate's empty DynamicCache reads as 'no state yet'",
    "_attn_implementation": "hf_internals.attention_implementation / eager_mask_config",
    "_add_dataclass_arguments": "build the parser from dataclasses.fields",
    "_parse_dataclass_field": "build the parser from dataclasses.fields",
    # datasets
    "_fingerprint": "Dataset.map chains the fingerprint itself; the encoder hashes as its tokenizer (ArrowLineEncoder.__reduce__)",
    "_indices": "flat_ids reads ds.with_format('arrow')[:], which applies a select/shuffle",
}

#: Private modules imported on purpose, each with its reason; any other `from x import _y` fails the test below.
PRIVATE_IMPORTS = {
    ("torch.utils", "_pytree"): "torch 2.13 has no public pytree module; the Cache registrations and checkpoints need one",
    ("huggingface_hub.utils", "_http"): "the current client factory, to wrap it with a timeout (no public getter)",
}


def test_no_private_name_is_imported_from_another_module():
    """Not from transformers, datasets, tokenizers or argparse, nor one hwlm module from another (a helper one
    module needs from another is public there, like tokenization.holds_special_token)."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(HWLM)}: from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")
                          and (node.module, a.name) not in PRIVATE_IMPORTS]
    assert not found, found


def modules():
    return sorted(p for p in HWLM.rglob("*.py") if p != INTERNALS)


def test_no_private_transformers_name_is_imported():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformers"):
                found += [f"{path.relative_to(HWLM)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found, found


def test_private_transformers_attributes_stay_in_hf_internals():
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else node.name if isinstance(node, ast.FunctionDef) else None
            if name in PRIVATE_ATTRIBUTES:
                found.append(f"{path.relative_to(HWLM)}:{node.lineno} {name} (instead: {PRIVATE_ATTRIBUTES[name]})")
    assert not found, found
    documented = INTERNALS.read_text()
    assert "_attn_implementation" in documented  # each name that stays is listed there with its reason
