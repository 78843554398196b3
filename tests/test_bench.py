"""The benchmarks run end to end at toy size: every table has its rows and every figure is finite and positive.

No timing assertions: the machine is shared, the figures are noise at this size. What is checked is that
`bench/run_all.py` (what `make bench` runs) works, writes its JSON, and that the comparisons are wired the way
the bench docstrings say (same token counts, the evaluation parity check).
"""

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


#: Stand-ins for pytorch/examples' word_language_model scripts (not shipped): the command lines and console lines
#: bench_small_job relies on, a pickled module saved with torch.save and read back with torch.load(f).
STAND_IN_MAIN = """
import argparse, torch
p = argparse.ArgumentParser()
for flag in ("--data", "--model", "--save"):
    p.add_argument(flag)
for flag in ("--emsize", "--nhid", "--epochs", "--seed"):
    p.add_argument(flag, type=int)
args = p.parse_args()
with open(args.save, "wb") as f:
    torch.save(torch.nn.Linear(2, 2), f)
with open(args.save, "rb") as f:
    torch.load(f)
print("| End of training | test loss  5.00 | test ppl   148.41")
"""
STAND_IN_GENERATE = """
import argparse
p = argparse.ArgumentParser()
for flag in ("--data", "--checkpoint", "--outf", "--words", "--seed"):
    p.add_argument(flag)
args = p.parse_args()
open(args.outf, "w").write("the " * int(args.words))
"""


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    import run_all

    out_dir = tmp_path_factory.mktemp("bench")
    upstream = tmp_path_factory.mktemp("word_language_model")
    (upstream / "main.py").write_text(STAND_IN_MAIN)
    (upstream / "generate.py").write_text(STAND_IN_GENERATE)
    (upstream / "model.py").write_text("")
    (upstream / "data.py").write_text("")
    return run_all.main(["--tiny", "--out_dir", str(out_dir), "--upstream", str(upstream)]), out_dir


def test_every_benchmark_writes_json_and_a_table(outputs):
    results, out_dir = outputs
    assert set(results) == {"train", "gpt2", "generate", "eval", "adaptive", "preprocess", "startup", "small_job"}
    for name, result in results.items():
        assert result["table"].count("\n") >= 3, name  # header, rule, at least two rows
        saved = json.loads((out_dir / f"bench_{name}_quick.json").read_text())
        assert saved["quick"] is True
        if name != "preprocess":  # its JSON keeps the raw runs, not the rendered table
            assert saved["table"] == result["table"]
    summary = (out_dir / "summary_quick.md").read_text()
    assert all(f"## {name}" in summary for name in results)


def test_training_rows_cover_every_family_and_vocabulary(outputs):
    rows = outputs[0]["train"]["rows"]
    assert {(r["family"], r["corpus"]) for r in rows} == {
        (f, c) for f in ("lstm", "rnn", "transformer", "transformer_memory") for c in ("ptb", "wikitext-2")
    }
    for r in rows:
        assert positive(r["hwlm"]["median"]) and positive(r["reference"]["median"]) and positive(r["ratio"])
        assert r["hwlm"]["rss_growth_mb"] >= 0


def paired_ratio(pair: dict, first: str, second: str) -> float:
    """What bench/common.py's paired_rates reports: the median of the per-round ratios of the interleaved sides."""
    return statistics.median(x / y for x, y in zip(pair[first]["rates"], pair[second]["rates"]))


def test_pairs_compare_like_with_like_and_each_ratio_is_its_rounds(outputs):
    """Every reported ratio is computed from the two interleaved sides it names (not a stray figure), and the GPT-2
    pair compares models of the same size."""
    results = outputs[0]
    gpt2 = results["gpt2"]
    assert gpt2["params"]["hwlm"] == gpt2["params"]["gpt2"]
    for key in ("train", "generate"):
        assert gpt2[key]["ratio"] == pytest.approx(paired_ratio(gpt2[key], "hwlm", "gpt2"))
    for family in ("lstm", "transformer"):
        pair = results["generate"]["results"][family]
        assert pair["ratio"] == pytest.approx(paired_ratio(pair, "cache", "no cache"))
    throughput = results["adaptive"]["throughput"]
    assert throughput["ratio"] == pytest.approx(paired_ratio(throughput, "hwlm adaptive", "reference full"))
    assert all(positive(p) for p in results["adaptive"]["perplexity"].values())
    preprocess = results["preprocess"]
    seconds = preprocess["median_seconds"]
    assert preprocess["speedup"] == pytest.approx(seconds["classic"] / seconds["hwlm"])  # > 1: hwlm is faster
    startup = results["startup"]
    assert startup["slowest_s"] == max(max(t) for name, t in startup["times"].items() if name != "baseline")


def test_evaluation_agrees_with_the_classic_loop_on_the_same_weights(outputs):
    for row in outputs[0]["eval"]["rows"]:
        ppl = row["perplexity"]
        assert positive(row["ratio"])
        # hwlm also scores the tail that batchify drops; at toy size that moves the figure a little
        assert ppl["hwlm"]["perplexity"] == pytest.approx(ppl["reference"]["perplexity"], rel=0.05)


def test_small_job_runs_both_sides_and_patches_only_what_torch_needs(outputs):
    job = outputs[0]["small_job"]
    assert job["patches"] == ["main.py: torch.load's weights_only default (torch >= 2.6)"]
    (r,) = job["rounds"]
    assert r["upstream"]["test_ppl"] == pytest.approx(148.41)  # read from the upstream console
    assert 1 < r["hwlm"]["test_ppl"] < job["corpus"]["vocabulary"] * 2  # hwlm-train's all_results.json, a real run
    assert job["ratio"] == pytest.approx(r["hwlm"]["total"] / r["upstream"]["total"])
    assert len(r["hwlm"]["seconds"]) == len(r["upstream"]["seconds"]) == 2  # train + evaluate, then sample
    assert "hwlm-train + hwlm-generate" in job["table"]


def test_small_job_is_skipped_without_the_upstream_scripts(tmp_path, capsys, monkeypatch):
    import run_all

    monkeypatch.delenv("HWLM_UPSTREAM_WLM", raising=False)
    assert run_all.main(["--tiny", "--only", "small_job", "--out_dir", str(tmp_path)]) == {}
    assert "skipped: give --upstream" in capsys.readouterr().out
