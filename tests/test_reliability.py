"""Issue 14 ("nothing lost, nothing silently wrong"), one test per reproduced failure, single process.

Each test fails on the code before the fix: the folder checks, the lock, the override merge, the resume rules,
the signal exit codes, the divergence check, the pickle refusal, the metrics repair and the push timeout.
The crash matrix that already worked (kill -9 at points of a save, SIGTERM/SIGINT, a full disk) is here too,
so it keeps working. Two-process runs are in test_reliability_multiprocess.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _toy import TINY_LSTM, lstm_flags, prepare_toy

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_toy(tmp_path_factory.mktemp("toy"))


def train_main(argv):
    from hwlm.cli.train import run

    return run(argv)


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def final_weights(out: Path) -> bytes:
    from hwlm.training.checkpoint import find_latest_checkpoint

    return (find_latest_checkpoint(out) / "model.safetensors").read_bytes()


# a mid-epoch run with dropout (RNG state matters) and a checkpoint every 2 steps
CRASH_FLAGS = ["--config_overrides", TINY_LSTM + ",input_dropout=0.2", "--max_train_steps", "8",
               "--checkpointing_steps", "2", "--save_total_limit", "10"]


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    train_main(lstm_flags(prepared, out, *CRASH_FLAGS))
    return out


# ------------------------------------------------------------------ 1. output folders are the user's


def test_train_refuses_a_folder_with_the_users_files_before_any_work(prepared, tmp_path):
    out = tmp_path / "proj"
    out.mkdir()
    (out / "README.md").write_text("my project notes")
    for extra in ([], ["--overwrite_output_dir"]):
        with pytest.raises(ValueError, match=r"did not write \(it would replace README.md\)"):
            train_main(lstm_flags(prepared, out, "--max_train_steps", "1", *extra))
    assert (out / "README.md").read_text() == "my project notes"
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]  # nothing written, not even the lock


def test_tokenizer_refuses_to_replace_a_foreign_tokenizer_config(tmp_path, capsys):
    from hwlm.cli.train_tokenizer import run as main  # run raises; main turns the error into exit status 2

    (tmp_path / "tokenizer_config.json").write_text('{"mine": true}')
    corpus = tmp_path / "train.txt"
    corpus.write_text("".join(f"w{i} w{i + 1} w{i + 2}\n" for i in range(40)))
    with pytest.raises(ValueError, match=r"hwlm-tokenizer did not write \(it would replace tokenizer_config.json\)"):
        main(["--train_file", str(corpus), "--output_dir", str(tmp_path)])
    assert json.loads((tmp_path / "tokenizer_config.json").read_text()) == {"mine": True}
    # its own earlier output is rebuilt in place (the committed tokenizer/ folder works this way)
    own = tmp_path / "tok"
    main(["--train_file", str(corpus), "--output_dir", str(own)])
    (own / "notes.txt").write_text("mine")
    main(["--train_file", str(corpus), "--output_dir", str(own)])
    assert (own / "notes.txt").read_text() == "mine" and (own / "tokenizer.json").is_file()


def test_overwrite_output_dir_removes_only_what_hwlm_wrote(prepared, tmp_path):
    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "1"))
    written = set(json.loads((out / "hwlm_run.json").read_text())["written"])
    assert {"checkpoints", "config.json", "README.md", "modeling_recurrent.py"} <= written
    (out / "notes.txt").write_text("mine")
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no",
                          "--overwrite_output_dir"))
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "checkpoints").exists()
    # a file the user adds under a name hwlm writes is not replaced either
    (out / "README.md").unlink()
    (out / "README.md").write_text("mine too")
    record = json.loads((out / "hwlm_run.json").read_text())
    record["written"].remove("README.md")
    (out / "hwlm_run.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"holds README.md, which hwlm-train did not write"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--overwrite_output_dir"))


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from hwlm.output_folders import OutputLock
    OutputLock(sys.argv[1], "holder").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_keeps_a_second_run_out_and_is_taken_over_from_a_dead_owner(prepared, tmp_path):
    from hwlm.output_folders import LOCK_NAME

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another run \(holder, pid {holder.pid} "):
            train_main(lstm_flags(prepared, out, "--max_train_steps", "1"))
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
        holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no"))
    assert not (out / LOCK_NAME).exists()  # released on exit
    assert (out / "model.safetensors").is_file()


# ------------------------------------------------------------------ 3. overrides merge, unknown keys refused


def test_command_line_config_overrides_update_the_presets_mapping():
    from hwlm.cli.train import parse
    from hwlm.training.arguments import parse_config_overrides

    model_args, _, _ = parse(["--config", str(REPO / "presets" / "quickstart.yaml"), "--config_overrides",
                              "hidden_size=64"])
    merged = parse_config_overrides(model_args.config_overrides)
    assert merged["hidden_size"] == 64 and merged["tie_word_embeddings"] is True
    assert merged["embedding_size"] == 128 and merged["input_dropout"] == 0.2


def test_a_misspelt_config_key_names_the_closest_field(prepared, tmp_path):
    with pytest.raises(ValueError, match=r"key 'hiden_size' is not a field of HwlmLstmConfig .*did you mean 'hidden_size'"):
        train_main(lstm_flags(prepared, tmp_path / "run", "--config_overrides", "hiden_size=64"))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ 6. settings checked before compute


@pytest.mark.parametrize("flag,value", [("--logging_steps", "0"), ("--lr_decay_factor", "0"),
                                        ("--per_device_eval_batch_size", "0"), ("--bptt", "-1"),
                                        ("--eval_steps", "0"), ("--learning_rate", "-1"),
                                        ("--checkpointing_steps", "0")])
def test_zero_or_negative_settings_fail_when_parsed(prepared, tmp_path, flag, value):
    with pytest.raises(ValueError, match=rf"{flag} must be"):
        train_main(lstm_flags(prepared, tmp_path / "run", flag, value))
    assert not (tmp_path / "run").exists()


def test_bad_settings_are_one_line_errors_with_exit_status_2(prepared, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"),
                           *lstm_flags(prepared, tmp_path / "run", "--logging_steps", "0")],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "hwlm-train: error: --logging_steps must be an integer >= 1, got 0"
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------ 5. resume is explicit


def test_resume_applies_a_new_learning_rate_and_records_it(prepared, tmp_path):
    out = tmp_path / "run"
    flags = ["--lr_scheduler_type", "constant", "--max_train_steps", "6", "--checkpointing_steps", "2"]
    train_main(lstm_flags(prepared, out, *flags, "--stop_after_steps", "3"))
    assert {r["lr"] for r in records(out, "train")} == {2.0}
    train_main(lstm_flags(prepared, out, *flags, "--resume_from_checkpoint", "latest", "--learning_rate", "0.5",
                          "--logging_steps", "2"))
    (resume,) = records(out, "resume")
    assert resume["step"] == 3 and resume["lr"] == 0.5
    assert resume["changed"] == {"learning_rate": {"from": 2.0, "to": 0.5}, "logging_steps": {"from": 1, "to": 2},
                                 "stop_after_steps": {"from": 3, "to": None}}
    after = [r for r in records(out, "train") if r["step"] > 3]
    assert [r["step"] for r in after] == [4, 6] and {r["lr"] for r in after} == {0.5}  # new rate and logging


def test_cpu_time_of_a_resumed_run_continues_from_the_checkpoint(prepared, tmp_path, monkeypatch):
    # metrics.jsonl's cpu_s is the x axis of equal-CPU comparisons: a resumed process must add to the count so far,
    # not restart it. A fake process clock: the first process has used 100 CPU-s at every record, the resumed one 5.
    process_clock = [100.0]
    monkeypatch.setattr(time, "process_time", lambda: process_clock[0])
    out = tmp_path / "run"
    flags = ["--max_train_steps", "6", "--checkpointing_steps", "2"]
    train_main(lstm_flags(prepared, out, *flags, "--stop_after_steps", "3"))
    assert {r["cpu_s"] for r in records(out, "train")} == {100.0}
    process_clock[0] = 5.0
    train_main(lstm_flags(prepared, out, *flags, "--resume_from_checkpoint", "latest"))
    (resume,) = records(out, "resume")
    assert resume["cpu_s"] == 105.0
    assert [(r["step"], r["cpu_s"]) for r in records(out, "train") if r["step"] > 3] == [(4, 105.0), (5, 105.0), (6, 105.0)]


def test_resume_refuses_changes_to_model_layout_or_data(prepared, tmp_path):
    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "4", "--checkpointing_steps", "2",
                          "--stop_after_steps", "2"))
    with pytest.raises(ValueError, match=r"--bptt was 8 and is 16 now.*Resume with the checkpoint's values"):
        train_main(lstm_flags(prepared, out, "--resume_from_checkpoint", "latest", "--bptt", "16"))
    with pytest.raises(ValueError, match=r"--config_overrides was .* and is .*hidden_size=32"):
        train_main(lstm_flags(prepared, out, "--resume_from_checkpoint", "latest",
                              "--config_overrides", TINY_LSTM.replace("hidden_size=16", "hidden_size=32")))


def test_resuming_an_older_checkpoint_starts_a_branch_and_keeps_it(prepared, tmp_path):
    from hwlm.training.checkpoint import find_latest_checkpoint

    out = tmp_path / "run"
    flags = ["--max_train_steps", "6", "--checkpointing_steps", "2", "--save_total_limit", "2"]
    train_main(lstm_flags(prepared, out, *flags))
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000004", "step_00000006"]
    train_main(lstm_flags(prepared, out, *flags, "--resume_from_checkpoint", str(ckpts / "step_00000004"),
                          "--learning_rate", "1"))
    names = sorted(p.name for p in ckpts.iterdir())
    # the checkpoint resumed from and the abandoned timeline are kept; the new branch keeps its own last 2
    assert names == ["step_00000004", "step_00000006", "step_00000006-branch1"]
    assert find_latest_checkpoint(out).name == "step_00000006-branch1"
    assert (out / "metrics-before-branch1.jsonl").is_file()
    assert records(out, "resume")[0]["branch"] == 1


def test_a_finite_but_useless_loss_is_reported_as_diverged(prepared, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from hwlm.training.loop import TrainingDiverged

    original = AutoModelForCausalLM.from_config.__func__
    calls = {"n": 0}

    def blow_up(module, args, kwargs, output):  # the 3rd training forward: loss ~ 1e3, perplexity e^1000
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                output.loss = output.loss * 250.0
        return output

    def from_config(cls, config, **kw):
        model = original(cls, config, **kw)
        model.register_forward_hook(blow_up, with_kwargs=True)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", classmethod(from_config))
    with pytest.raises(TrainingDiverged, match=r"training loss reached \d+.* above 3 x ln\(vocab_size=\d+\) at step 3"):
        train_main(lstm_flags(prepared, tmp_path / "run", "--checkpointing_steps", "1"))


def test_a_cut_off_last_metrics_line_is_repaired_on_resume(prepared, tmp_path, reference):
    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, *CRASH_FLAGS, "--stop_after_steps", "5"))
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"type": "train", "step": 6, "lo')  # a crash in the middle of a write
    train_main(lstm_flags(prepared, out, *CRASH_FLAGS, "--resume_from_checkpoint", "latest"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [r["loss"] for r in records(out, "train")] == [r["loss"] for r in records(reference, "train")]


# ------------------------------------------------------------------ 6. checkpoints never unpickle objects


PAYLOAD = textwrap.dedent("""
    import pickle, sys
    class Evil:
        def __reduce__(self):
            return (open, (sys.argv[2], "w"))  # runs on unpickling: creates a file
    with open(sys.argv[1], "wb") as fh:
        pickle.dump({"state": Evil()}, fh, protocol=2)
""")


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_a_crafted_pickle_in_a_checkpoint_is_refused_not_run(prepared, tmp_path, name):
    from hwlm.training.checkpoint import CheckpointError, MANIFEST_NAME

    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "2",
                          "--stop_after_steps", "2"))
    ckpt = out / "checkpoints" / "step_00000002"
    ran = tmp_path / "code_ran"
    subprocess.run([sys.executable, "-c", PAYLOAD, str(ckpt / name), str(ran)], check=True)
    manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
    manifest["files"][name] = (ckpt / name).stat().st_size  # a consistent-looking checkpoint
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"{name}' holds objects other than tensors.*refusing it"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--resume_from_checkpoint", "latest"))
    assert not ran.exists()
    assert not list(ckpt.glob("custom_checkpoint_*")) or name.startswith("custom")  # hwlm writes none itself


def test_hwlm_state_in_a_checkpoint_is_json_and_safetensors(reference):
    ckpt = reference / "checkpoints" / "step_00000004"
    state = json.loads((ckpt / "hwlm_state.json").read_text())
    assert state["trainer"]["global_step"] == 4 and state["settings"]["bptt"] == 8
    assert (ckpt / "carried_rank0.safetensors").is_file()
    assert not list(ckpt.glob("custom_checkpoint_*"))


# ------------------------------------------------------------------ 6. hwlm-push does not hang


def test_push_to_a_hub_that_never_answers_fails_in_bounded_time(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_text("w")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel and never answered
    try:
        env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE",)}
        env.update(HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}", HF_TOKEN="hf_dummy")
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / "push.py"), str(folder), "someone/x",
                               "--timeout", "1", "--max_retries", "1"], env=env, capture_output=True, text=True,
                              timeout=90)
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "hwlm-push: error: the Hub at http://127.0.0.1:" in proc.stderr
    assert "did not answer (ReadTimeout" in proc.stderr and "in 2 attempts with a 1 s timeout" in proc.stderr
    assert elapsed < 60


# ------------------------------------------------------------------ crash matrix (worked before; keep it working)


KILL_DRIVER = textwrap.dedent("""
    import os, signal, sys
    from accelerate import Accelerator
    from hwlm.training import checkpoint as ck
    point, argv = sys.argv[1], sys.argv[2:]
    calls = {"n": 0}
    def die_on_second(fn):
        def wrapper(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 2:
                if point == "after_save_state":
                    fn(*a, **kw)
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return wrapper
    if point in ("during_save_state", "after_save_state"):
        Accelerator.save_state = die_on_second(Accelerator.save_state)
    elif point == "before_rename":
        ck._manifest = die_on_second(ck._manifest)
    from hwlm.cli.train import main
    main(argv)
""")


@pytest.mark.parametrize("point", ["during_save_state", "after_save_state", "before_rename"])
def test_kill_9_at_a_point_of_a_save_then_resume_matches(prepared, tmp_path, reference, point):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, point, *lstm_flags(prepared, out, *CRASH_FLAGS)],
                          env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")] == ["step_00000002"]
    train_main(lstm_flags(prepared, out, *CRASH_FLAGS, "--resume_from_checkpoint", "latest"))
    assert final_weights(out) == final_weights(reference)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_then_exits_128_plus_signal_and_resume_matches(prepared, tmp_path, sig, code):
    flags = ["--max_train_steps", "300", "--num_train_epochs", "20", "--checkpointing_steps", "no"]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *lstm_flags(prepared, out, *flags)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3
    ):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in _ + err
    assert (out / "checkpoints").is_dir()
    train_main(lstm_flags(prepared, out, *flags, "--resume_from_checkpoint", "latest"))
    ref = tmp_path / "ref"
    train_main(lstm_flags(prepared, ref, *flags))
    assert (out / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert [r["loss"] for r in records(out, "train")] == [r["loss"] for r in records(ref, "train")]


def test_disk_full_during_a_save_keeps_the_last_checkpoint_and_resume_matches(prepared, tmp_path, reference,
                                                                              monkeypatch):
    import errno

    import safetensors.torch

    original = safetensors.torch.save_file
    calls = {"n": 0}

    def full_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint's carried state (hwlm's own write after accelerate's)
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", full_disk)
        with pytest.raises(OSError, match="No space left on device"):
            train_main(lstm_flags(prepared, out, *CRASH_FLAGS))
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")] == ["step_00000002"]
    train_main(lstm_flags(prepared, out, *CRASH_FLAGS, "--resume_from_checkpoint", "latest"))
    assert final_weights(out) == final_weights(reference)


def test_prepare_refuses_a_folder_with_the_users_files(tmp_path):
    from hwlm.cli.prepare import run as main  # run raises; main turns the error into exit status 2

    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "mine.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"hwlm-prepare did not write \(it would replace tokenizer\)"):
        main(["--output_dir", str(tmp_path), "--block_size", "64"])
    assert (tmp_path / "tokenizer" / "mine.txt").read_text() == "mine"


def test_a_resume_with_a_new_rate_does_not_publish_the_abandoned_timelines_best_model(prepared, tmp_path):
    out = tmp_path / "run"
    flags = ["--max_train_steps", "6", "--eval_steps", "2", "--checkpointing_steps", "2", "--save_total_limit", "5"]
    train_main(lstm_flags(prepared, out, *flags))
    best = json.loads((out / "best_model" / "hwlm_best.json").read_text())
    assert best["step"] > 2  # written after the checkpoint resumed from below
    train_main(lstm_flags(prepared, out, *flags, "--learning_rate", "0.1", "--resume_from_checkpoint",
                          str(out / "checkpoints" / "step_00000002")))
    (resume,) = records(out, "resume")
    assert resume["best_model_set_aside"].endswith("best_model-before-branch1")
    assert json.loads((out / "best_model" / "hwlm_best.json").read_text())["branch"] == 1
    results = json.loads((out / "all_results.json").read_text())
    evals = [r for r in records(out, "eval") if r["step"] > 2]
    assert results["validation_loss"] == pytest.approx(min(r["loss"] for r in evals), rel=1e-6)


def test_an_empty_input_file_is_a_one_line_error(tmp_path, capsys):
    from hwlm.cli.train import main

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "valid.txt").write_text("a b c\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--train_file", str(tmp_path / "empty.txt"), "--validation_file", str(tmp_path / "valid.txt"),
              "--test_file", str(tmp_path / "valid.txt"), "--output_dir", str(tmp_path / "run"), "--disable_tqdm"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hwlm-train: error: --train_file") and "is empty" in err[-1]
