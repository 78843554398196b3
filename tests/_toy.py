"""Tiny corpora and run settings shared by the training, evaluation and CLI tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import torch

# Tiny models on a 2-core machine shared with other jobs: one intra-op thread is ~100x faster than
# two threads fighting for the cores (measured: 1 ms vs 200 ms per LSTM step under load).
torch.set_num_threads(1)

WORDS = [f"w{i}" for i in range(80)]

TINY_LSTM = "embedding_size=16,hidden_size=16,num_hidden_layers=2"
TINY_TRANSFORMER = "hidden_size=16,num_hidden_layers=1,num_attention_heads=2,intermediate_size=32,max_position_embeddings=32"


def toy_lines(n: int, seed: int) -> list[str]:
    """Lines with some structure (a word tends to be followed by its successor) so a model can learn."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        start = rng.randrange(len(WORDS))
        lines.append(" ".join(WORDS[(start + k * rng.choice((1, 1, 1, 2))) % len(WORDS)] for k in range(rng.randint(3, 9))))
    return lines


def write_toy_corpus(folder: Path, n_train: int = 150, n_eval: int = 30) -> dict[str, str]:
    """Write train/valid/test text files; return the data flags."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", n_train, 0), ("valid", n_eval, 1), ("test", n_eval, 2)):
        path = folder / f"{name}.txt"
        path.write_text("\n".join(toy_lines(n, seed)) + "\n")
        files[name] = str(path)
    return {"train_file": files["train"], "validation_file": files["valid"], "test_file": files["test"]}


def prepare_toy(folder: Path, block_size: int = 16) -> Path:
    """hwlm-prepare the toy corpus into ``folder/prepared``; return that folder."""
    from hwlm.data import DataArguments, load_corpus, prepare_datasets, resolve_tokenizer

    flags = write_toy_corpus(folder / "text")
    args = DataArguments(**flags, block_size=block_size)
    corpus = load_corpus(args)
    tokenizer = resolve_tokenizer(args, corpus)
    out = folder / "prepared"
    prepare_datasets(corpus, tokenizer, block_size=block_size, output_dir=out)
    return out


def lstm_flags(prepared: Path, output_dir: Path, *extra: str) -> list[str]:
    """Flags of a tiny streamed LSTM run (a few seconds)."""
    return [
        "--prepared_data_dir", str(prepared),
        "--output_dir", str(output_dir),
        "--model_type", "hwlm_lstm",
        "--config_overrides", TINY_LSTM,
        "--batching", "streams",
        "--bptt", "8",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "2",
        "--learning_rate", "2",
        "--max_grad_norm", "1",
        "--num_train_epochs", "1",
        "--logging_steps", "1",
        "--disable_tqdm",
        *extra,
    ]


def run_process_group(cmd: list[str], *, timeout: int, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session whose whole process group is killed on a timeout, so a rank that hangs
    fails the test without outliving it (a plain ``run`` kills the launcher only, orphaning the ranks)."""
    with subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def fit_losses(model, input_ids: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """`steps` optimiser steps on one batch (labels = inputs, shifted inside the model); the loss of each step."""
    losses = []
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    return losses


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_main(argv):
    """hwlm-train's `run` on a list of flags (what the console command runs, without the exit-status wrapper)."""
    from hwlm.cli.train import run

    return run(argv)
