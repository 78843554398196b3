"""Run every hwlm benchmark in turn and print their tables (``make bench`` / ``make bench-quick``).

Each benchmark also writes its own JSON to ``bench/results/``; this script adds ``summary[_quick].md`` there with
all the tables. ``--quick`` uses random tokens, few steps and small evaluation slices (under 2 minutes on 2 CPU
cores); the default uses the real PTB and WikiText-2 files from ``../shared/data`` when present.

    python bench/run_all.py [--quick] [--only train gpt2 ...] [--threads 1] [--upstream DIR]

``small_job`` runs pytorch/examples' word_language_model scripts beside hwlm's commands; it needs a checkout of them
(``--upstream <examples>/word_language_model`` or ``$HWLM_UPSTREAM_WLM``) and is skipped, saying so, without one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_adaptive  # noqa: E402
import bench_eval  # noqa: E402
import bench_generate  # noqa: E402
import bench_gpt2  # noqa: E402
import bench_preprocess  # noqa: E402
import bench_small_job  # noqa: E402
import bench_startup  # noqa: E402
import bench_train  # noqa: E402
from common import RESULTS, environment  # noqa: E402

BENCHMARKS = {
    "train": bench_train,
    "gpt2": bench_gpt2,
    "generate": bench_generate,
    "eval": bench_eval,
    "adaptive": bench_adaptive,
    "preprocess": bench_preprocess,
    "startup": bench_startup,
    "small_job": bench_small_job,
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny steps and slices, random tokens (< 2 minutes)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, for the tests (implies --quick)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--out_dir", default=None, help="where the JSON goes (default bench/results)")
    parser.add_argument("--upstream", default=os.environ.get("HWLM_UPSTREAM_WLM"),
                        help="pytorch/examples' word_language_model folder, for small_job (or $HWLM_UPSTREAM_WLM)")
    args = parser.parse_args(argv)
    quick = args.quick or args.tiny
    common = (["--tiny"] if args.tiny else ["--quick"] if quick else []) + (
        ["--out_dir", args.out_dir] if args.out_dir else [])
    sections, outputs, start = [], {}, time.perf_counter()
    for name in args.only:
        print(f"\n## {name}\n", flush=True)
        if name == "small_job" and not args.upstream:
            note = ("skipped: give --upstream <pytorch/examples>/word_language_model (or set $HWLM_UPSTREAM_WLM) to "
                    "run the upstream scripts beside hwlm's commands")
            print(note)
            sections.append(f"## {name}\n\n{note}\n")
            continue
        t0 = time.perf_counter()
        extra = [] if name == "preprocess" else ["--threads", str(args.threads)]
        if name == "small_job":
            extra += ["--upstream", args.upstream]
        outputs[name] = BENCHMARKS[name].main(common + extra)
        seconds = time.perf_counter() - t0
        sections.append(f"## {name} ({seconds:.0f} s)\n\n{outputs[name]['header']}\n\n{outputs[name]['table']}\n")
    env = environment()
    summary = (f"# hwlm benchmarks{' (quick)' if quick else ''}\n\nPython {env['python']}, torch {env['torch']}, "
               f"{args.threads} thread(s), {env['cpus']} CPUs, load average at the end "
               f"{', '.join(f'{x:.1f}' for x in env['load_avg'])}; total {time.perf_counter() - start:.0f} s\n\n"
               + "\n".join(sections))
    out_dir = Path(args.out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"summary{'_quick' if quick else ''}.md"
    path.write_text(summary)
    print(f"\nwrote {path}")
    return outputs


if __name__ == "__main__":
    main()
