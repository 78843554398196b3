"""docs/architecture.md's layers hold: every module of hwlm/ is in one layer, none imports from a later one, and
the document names every room."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HWLM = REPO / "hwlm"
DOC = REPO / "docs" / "architecture.md"

#: bottom up, as in docs/architecture.md: a room may import from its own layer and the ones before it
LAYERS = [
    ["hwlm.errors", "hwlm.settings", "hwlm.allocator"],
    ["hwlm.corpora", "hwlm.tokenization", "hwlm.output_folders", "hwlm.batching"],
    ["hwlm.models"],
    ["hwlm.data"],
    ["hwlm.model_building", "hwlm.model_sizes", "hwlm.safe_load"],
    ["hwlm.hub"],
    ["hwlm.evaluation"],
    ["hwlm.training"],
    ["hwlm.research"],
    ["hwlm.cli", "hwlm.run_script"],
]
LAYER = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path):
    """(line, module) of every hwlm import in a file, ``from hwlm import data`` read as ``hwlm.data``."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            if base.split(".")[0] != "hwlm":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = REPO.joinpath(*sub.split("."))
                yield node.lineno, sub if target.with_suffix(".py").exists() or target.is_dir() else base
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "hwlm")


def rooms_on_disk() -> set[str]:
    return {room(".".join(p.relative_to(REPO).with_suffix("").parts)) for p in HWLM.rglob("*.py")
            if p != HWLM / "__init__.py"}


def test_every_room_has_a_layer():
    assert rooms_on_disk() == set(LAYER), "place a new module in LAYERS and docs/architecture.md"


def test_no_room_imports_from_a_later_layer():
    upward = []
    for path in sorted(HWLM.rglob("*.py")):
        if path == HWLM / "__init__.py":
            continue
        own = room(".".join(path.relative_to(REPO).with_suffix("").parts))
        for line, target in imported_modules(path):
            if target != "hwlm" and LAYER[room(target)] > LAYER[own]:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target} (layer {LAYER[room(target)]} > {LAYER[own]})")
    assert not upward, upward


def test_the_document_names_every_room_in_its_layer():
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].isdigit():
            rows[int(cells[1])] = cells[2]
    assert sorted(rows) == list(range(len(LAYERS)))
    for i, rooms in enumerate(LAYERS):
        assert sorted(r.strip("` ") for r in rows[i].split(",")) == sorted(rooms), f"layer {i}"
