"""Command start-up: how long a user waits for ``hwlm-<command> --help`` and for a settings error.

Every command is run as its console entry point would run it (``python -c "from hwlm.cli.X import main; main()"``,
a fresh interpreter each time), with ``--help`` and with one bad setting, interleaved with the baseline a user of
plain transformers pays before any work: ``import torch, transformers; from transformers import
AutoModelForCausalLM``. The table reports medians; the target is under 1.5 s for every command (the tests check the
cause instead of the time: neither torch nor transformers' modeling code is imported, see tests/test_startup.py).

    python bench/bench_startup.py            # 5 rounds
    python bench/bench_startup.py --quick    # 1 round
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, markdown_table, write_result  # noqa: E402

#: console command → (module, the arguments of one settings error)
COMMANDS = {
    "hwlm-prepare": ("hwlm.cli.prepare", ["--block_size", "0"]),
    "hwlm-tokenizer": ("hwlm.cli.train_tokenizer", ["--pre_tokenizer", "bogus"]),
    "hwlm-train": ("hwlm.cli.train", ["--learning_rate", "-1"]),
    "hwlm-eval": ("hwlm.cli.evaluate", ["--model_name_or_path", "m", "--cache_lambda", "2"]),
    "hwlm-generate": ("hwlm.cli.generate", ["--model_name_or_path", "m", "--max_new_tokens", "0"]),
    "hwlm-push": ("hwlm.cli.push", ["folder"]),
    "hwlm-gradflow": ("hwlm.cli.gradflow", ["--num_threads", "many"]),
}
BASELINE = "import torch, transformers; from transformers import AutoModelForCausalLM"


def timed(code: str, argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, check=False)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--tiny", action="store_true", help="one round, two commands (the tests)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="accepted for run_all; unused")
    parser.add_argument("--out_dir", default=None)
    args = parser.parse_args(argv)
    quick = args.quick or args.tiny
    rounds = args.rounds or (1 if quick else 5)
    commands = dict(list(COMMANDS.items())[:2]) if args.tiny else COMMANDS
    times: dict[str, list[float]] = {"baseline": []}
    for _ in range(rounds):  # interleaved: the baseline, then each command's --help and its settings error
        times["baseline"].append(timed(BASELINE, []))
        for name, (module, bad) in commands.items():
            code = f"import sys; from {module} import main; sys.argv[0] = {name!r}; main()"
            times.setdefault(f"{name} --help", []).append(timed(code, ["--help"]))
            times.setdefault(f"{name} (settings error)", []).append(timed(code, bad))
    base = statistics.median(times["baseline"])
    rows = [[label, statistics.median(t), base / statistics.median(t), "< 1.5 s"] for label, t in times.items()
            if label != "baseline"]
    rows.insert(0, [f"baseline: python -c '{BASELINE}'", base, 1.0, ""])
    slowest = max(statistics.median(t) for label, t in times.items() if label != "baseline")
    header = (f"Median of {rounds} interleaved round(s), a fresh interpreter per run; slowest command "
              f"{slowest:.2f} s, the baseline {base:.2f} s")
    table = markdown_table(["run", "median s", "speed-up vs baseline", "target"], rows)
    print(header + "\n\n" + table)
    result = {"benchmark": "startup", "header": header, "table": table, "times": times, "slowest_s": slowest,
              "baseline_s": base, "rounds": rounds}
    write_result("bench_startup", result, quick, args.out_dir)
    return result


if __name__ == "__main__":
    main()
