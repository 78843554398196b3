"""Issue 14, item 2: real two-process runs on CPU, and their stop + resume.

``accelerate launch --num_processes 2 --cpu`` starts ONE process on a CPU machine (accelerate's
``simple_launcher``); ``--multi_gpu`` goes through torchrun and starts two, which run as one data-parallel job
on CPUs only with ``ACCELERATE_USE_CPU=1`` (accelerate's ``AcceleratorState`` reads it; without it each process
finds no GPU and trains alone). Each test asserts what actually ran: the ranks and process ids recorded in
``hwlm_run.json`` and one carried-state file per rank in the checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from _toy import TINY_LSTM, TINY_TRANSFORMER, free_port, lstm_flags, prepare_toy, run_process_group

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # still part of `make test` (pytest -q runs every mark)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_toy(tmp_path_factory.mktemp("toy"))


# hwlm-train, then a report of whether the process group is still up (it must have been destroyed) and whether a
# DDP-wrapped model outlived the run (its reducer holds the group; freed after the group, it can hang a rank at exit)
DRIVER = """
import gc
import sys
import torch
import torch.distributed as dist
from hwlm.cli.train import run

destroy, alive = dist.destroy_process_group, []

def counting_destroy(*args, **kwargs):  # how many DDP models are still alive when the group goes
    alive.append(sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects()))
    return destroy(*args, **kwargs)

dist.destroy_process_group = counting_destroy
run(sys.argv[1:])
print(f"exit: process group initialized={dist.is_initialized()}, ddp models alive at destroy={alive}", flush=True)
"""


def launch(flags: list[str], cwd: Path, *, use_cpu: bool = True, script: Path | None = None, timeout: int = 300):
    """The README's CPU form: ``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(script or REPO / "scripts" / "train.py"), *flags]
    return run_process_group(cmd, cwd=cwd, env=env, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _processes(out: Path) -> list[dict]:
    return json.loads((out / "hwlm_run.json").read_text())["processes"]


def _final_weights(out: Path) -> bytes:
    from hwlm.training.checkpoint import find_latest_checkpoint

    return (find_latest_checkpoint(out) / "model.safetensors").read_bytes()


REGIMES = {
    "streams": ["--config_overrides", TINY_LSTM + ",input_dropout=0.2", "--per_device_train_batch_size", "2"],
    "blocks": ["--model_type", "hwlm_transformer", "--config_overrides", TINY_TRANSFORMER + ",hidden_dropout=0.1",
               "--batching", "blocks", "--block_size", "16", "--per_device_train_batch_size", "2",
               "--optimizer", "adamw", "--learning_rate", "3e-3", "--lr_scheduler_type", "cosine"],
    # the Transformer with segment memory streams like a recurrent model: each rank carries its own memory
    "memory_streams": ["--model_type", "hwlm_transformer", "--config_overrides",
                       TINY_TRANSFORMER + ",position_embedding_type=alibi,memory_length=8,hidden_dropout=0.1",
                       "--per_device_train_batch_size", "2", "--optimizer", "adamw", "--learning_rate", "3e-3"],
}


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_two_processes_stop_mid_epoch_and_resume_to_identical_weights(prepared, tmp_path, regime):
    common = [*REGIMES[regime], "--max_train_steps", "9", "--checkpointing_steps", "3", "--save_total_limit", "5"]
    full, part = tmp_path / "full", tmp_path / "part"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = launch(lstm_flags(prepared, full, *common), tmp_path, script=driver)
    _ok(proc)
    # both ranks destroyed the process group at the end of the run (a rank left in it can hang at exit)
    assert proc.stdout.count("exit: process group initialized=False, ddp models alive at destroy=[0]") == 2, (
        proc.stdout[-2000:])
    # two processes really ran, as one job: ranks 0 and 1 with their own process ids
    procs = _processes(full)
    assert sorted(p["rank"] for p in procs) == [0, 1] and len({p["pid"] for p in procs}) == 2
    # the same kind of result as one process: every validation target scored exactly once
    from hwlm.data import load_prepared

    results = json.loads((full / "all_results.json").read_text())
    assert results["validation_num_tokens"] == load_prepared(prepared).stream_tensor("validation").numel() - 1
    stopped = launch(lstm_flags(prepared, part, *common, "--stop_after_steps", "4"), tmp_path)
    _ok(stopped)
    ckpt = part / "checkpoints" / "step_00000004"
    assert ckpt.is_dir()  # a mid-epoch checkpoint (an epoch has more than 4 steps here)
    state = json.loads((ckpt / "hwlm_state.json").read_text())
    assert 0 < state["trainer"]["next_window"] and state["trainer"]["epoch"] == 0
    if regime != "blocks":
        # each rank saved its own carried state, and they differ (rank 0's is not everyone's)
        from safetensors.torch import load_file

        r0, r1 = (load_file(str(ckpt / f"carried_rank{r}.safetensors")) for r in (0, 1))
        assert r0.keys() == r1.keys() and any(not (r0[k] == r1[k]).all() for k in r0)
    _ok(launch(lstm_flags(prepared, part, *common, "--resume_from_checkpoint", "latest"), tmp_path))
    assert _final_weights(part) == _final_weights(full)
    assert (part / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    losses = lambda out: [(r["step"], r["loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                          if r["type"] == "train"]  # noqa: E731
    assert losses(part) == losses(full)


def test_multi_gpu_launch_without_cpu_flag_is_refused_on_a_cpu_machine(prepared, tmp_path):
    """Without ACCELERATE_USE_CPU each process would train alone into the same folder; hwlm refuses."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU machine --multi_gpu is the right form")
    proc = launch(lstm_flags(prepared, tmp_path / "out", "--max_train_steps", "2"), tmp_path, use_cpu=False)
    assert proc.returncode != 0
    assert "independent copies would train into one folder" in proc.stderr
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in proc.stderr


def test_a_user_error_ends_both_processes_promptly(prepared, tmp_path):
    """Issue 10: --push_to_hub without --hub_model_id used to fail on the main process after training while the
    other rank waited for it forever; `check_settings` now refuses it on every rank before any process group."""
    import time

    t0 = time.monotonic()
    proc = launch(lstm_flags(prepared, tmp_path / "out", "--push_to_hub"), tmp_path, timeout=150)  # a hang times out
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    # each rank found the error by itself and printed it (nobody waited for anybody); the first to finish exited 2
    # (the launcher then ends the other, which may already have exited 2 too)
    assert proc.stderr.count("hwlm-train: error: --push_to_hub needs --hub_model_id") == 2, proc.stderr[-3000:]
    assert "failed (exitcode: 2)" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # refused before the folder was claimed
    assert elapsed < 150
