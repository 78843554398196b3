"""hwlm.allocator: the training and evaluation commands keep freed tensor memory instead of page-faulting it back.

Page faults are counted (``ru_minflt``), not time: a step's large tensors (here 93 MB, the logits of 20x35
tokens over WikiText-2's 33k words) must be reused from the heap after the first step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from hwlm.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]

STEPS = """
import json, resource, sys
import torch
import transformers.utils  # the heap state every hwlm command runs in
from hwlm.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
def step():
    logits = torch.empty(700, 33278); logits.fill_(1.0)
    grad = torch.empty(700, 33278); grad.fill_(2.0)
step()  # the first step takes its memory
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

ARROW = """
import json, sys
import pyarrow  # a command's data stack imports it before its work starts
from hwlm.allocator import keep_freed_memory
applied = keep_freed_memory()
print(json.dumps({"applied": applied, "arrow_pool": pyarrow.default_memory_pool().backend_name}))
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc settings")


def run(code: str, *args: str, **env) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "HWLM_MALLOC_TUNING", "ARROW_DEFAULT_MEMORY_POOL")} | env
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                          env=env | {"PYTHONPATH": str(REPO)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def page_faults(mode: str, **env) -> dict:
    return run(STEPS, mode, **env)


@glibc_only
def test_repeated_large_tensors_are_reused_not_faulted_afresh():
    plain, tuned = page_faults("plain"), page_faults("tuned")
    assert tuned["applied"] is True
    pages = 20 * 700 * 33278 * 4 // 4096  # what 20 fresh 93 MB tensors touch
    assert plain["faults"] > pages // 2  # glibc's default: every one mmapped and zero-filled again
    assert tuned["faults"] < pages // 20


@glibc_only
def test_the_users_allocator_settings_win():
    assert page_faults("tuned", HWLM_MALLOC_TUNING="0")["applied"] is False
    assert page_faults("tuned", MALLOC_ARENA_MAX="2")["applied"] is False
    assert run(ARROW, ARROW_DEFAULT_MEMORY_POOL="mimalloc")["arrow_pool"] == "mimalloc"


@glibc_only
def test_arrow_buffers_join_the_tuned_heap():
    assert run(ARROW) == {"applied": True, "arrow_pool": "system"}
    assert run(ARROW, HWLM_MALLOC_TUNING="0")["arrow_pool"] != "system"


def test_not_applied_off_glibc(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *a, **k: ("musl", "1.2"))
    for key in [k for k in os.environ if k.startswith("MALLOC_")] + ["LD_PRELOAD", "HWLM_MALLOC_TUNING"]:
        monkeypatch.delenv(key, raising=False)
    assert keep_freed_memory() is False
