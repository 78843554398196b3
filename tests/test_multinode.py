"""Issue 22, item 5: training on several machines, as two "machines" on loopback.

Each machine is its own ``accelerate launch --num_machines 2 --machine_rank r --main_process_ip 127.0.0.1`` (one
process each, the README's form with ``ACCELERATE_USE_CPU=1``), so the launchers rendezvous over TCP exactly as
two hosts would. What a real second host adds (another filesystem) is simulated by giving machine 1 its own
``--output_dir``. Both machines run at once in a new session each, killed as a group if a test's bound is reached.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _toy import TINY_LSTM, free_port, prepare_toy

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # still part of `make test` (pytest -q runs every mark)
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_toy(tmp_path_factory.mktemp("toy"))


def flags(prepared: Path, out: Path, *extra: str) -> list[str]:
    return ["--prepared_data_dir", str(prepared), "--output_dir", str(out), "--model_type", "hwlm_lstm",
            "--config_overrides", TINY_LSTM, "--batching", "streams", "--bptt", "8", "--per_device_train_batch_size",
            "4", "--max_train_steps", "4", "--checkpointing_steps", "2", "--disable_tqdm", "--ddp_timeout", "30",
            *extra]


def two_machines(machine_flags: list[list[str]], cwd: Path, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Launch machine 0 and machine 1 at once (``machine_flags[r]``: hwlm-train's flags on machine r); wait for
    both, killing both process groups if either is still running after ``timeout`` seconds (then the test fails)."""
    port = free_port()
    procs = []
    for rank, train_flags in enumerate(machine_flags):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2", "--machine_rank",
               str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--mixed_precision",
               "no", "--dynamo_backend", "no", str(REPO / "scripts" / "train.py"), *train_flags]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=ENV, start_new_session=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return results


def hwlm_error(result: subprocess.CompletedProcess) -> str:
    return next((ln for ln in result.stderr.splitlines() if ln.startswith("hwlm-train: error:")), result.stderr[-2000:])


def test_two_machines_sharing_the_output_folder_train_as_one_run(prepared, tmp_path):
    out = tmp_path / "shared"
    results = two_machines([flags(prepared, out), flags(prepared, out)], tmp_path)
    assert [r.returncode for r in results] == [0, 0], [hwlm_error(r) for r in results]
    ranks = json.loads((out / "hwlm_run.json").read_text())["processes"]
    assert [p["rank"] for p in ranks] == [0, 1]
    for step in ("step_00000002", "step_00000004"):
        names = {p.name for p in (out / "checkpoints" / step).iterdir()}
        assert {"carried_rank0.safetensors", "carried_rank1.safetensors", "random_states_1.pkl"} <= names


def test_an_unshared_output_folder_is_refused_on_both_machines_at_the_first_checkpoint(prepared, tmp_path):
    mine, theirs = tmp_path / "machine0", tmp_path / "machine1"  # the same path on two hosts' own disks
    results = two_machines([flags(prepared, mine), flags(prepared, theirs)], tmp_path)
    for result in results:
        assert result.returncode != 0
        assert "files of rank(s) [1] are not in" in hwlm_error(result)
        assert "not one folder shared by every machine" in hwlm_error(result)
    assert not list((mine / "checkpoints").iterdir()) and not list((theirs / "checkpoints").iterdir())  # no .tmp-*


def test_a_machine_that_fails_before_start_up_ends_the_other(prepared, tmp_path):
    """Machine 1 refuses its settings (a data folder missing there) before start-up; machine 0, already waiting
    for it, gives up after --ddp_timeout instead of the default 30 minutes (the subprocess bound fails a hang)."""
    results = two_machines([flags(prepared, tmp_path / "run"), flags(tmp_path / "missing", tmp_path / "run")],
                           tmp_path, timeout=240)
    assert "is not a prepared data folder" in hwlm_error(results[1])
    assert results[0].returncode != 0
    assert "did not join within --ddp_timeout 30 s" in hwlm_error(results[0])
