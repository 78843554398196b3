"""Curves of logged runs against CPU time: the stamps a run writes, and the comparison figure built from them."""

from __future__ import annotations

import json
import time

import pytest

from hwlm.cli.plot_runs import main
from hwlm.research.results import read_curves
from hwlm.training.run import write_metrics


def fake_run(folder, points, train_every=2):
    folder.mkdir(parents=True)
    lines = []
    for i, (cpu, ppl) in enumerate(points):
        if i % train_every == 0:
            lines.append({"type": "train", "step": i, "loss": 5.0, "perplexity": 150.0, "cpu_s": cpu - 1})
        lines.append({"type": "eval", "split": "validation", "step": i, "loss": 4.6, "perplexity": ppl, "cpu_s": cpu})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def test_every_metrics_record_is_stamped_with_wall_and_cpu_time(tmp_path):
    write_metrics(tmp_path, {"type": "train", "step": 1, "loss": 5.0})
    start = time.process_time()
    while time.process_time() - start < 0.05:  # burn CPU between the two records (stamps are rounded to 0.01 s)
        pass
    write_metrics(tmp_path, {"type": "train", "step": 2, "loss": 4.0})
    first, second = map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert first["step"] == 1 and second["cpu_s"] > first["cpu_s"] > 0 and second["time"] >= first["time"]


def test_read_curves_in_cpu_hours_and_steps(tmp_path):
    run = fake_run(tmp_path / "a", [(3600, 200.0), (7200, 120.0)])
    curves = read_curves(run)
    assert curves["validation"] == [(1.0, 200.0), (2.0, 120.0)]
    assert curves["train"] == [((3600 - 1) / 3600, 150.0)]
    assert read_curves(run / "metrics.jsonl", x="step")["validation"] == [(0, 200.0), (1, 120.0)]


def test_runs_logged_without_cpu_time_name_the_way_out(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"type": "eval", "step": 5, "loss": 4.0}) + "\n")
    with pytest.raises(ValueError, match="without 'cpu_s'.*x='step'"):
        read_curves(tmp_path)
    assert read_curves(tmp_path, x="step")["validation"][0][0] == 5


def test_command_draws_the_figure(tmp_path, capsys):
    a = fake_run(tmp_path / "lstm", [(600, 300.0), (1200, 180.0)])
    b = fake_run(tmp_path / "transformer", [(700, 320.0), (1300, 190.0), (1900, 170.0)])
    out = tmp_path / "fig.png"
    main([str(out), f"LSTM={a}", f"Transformer + memory={b}", "--title", "toy"])
    assert out.stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "LSTM: 2 evaluations, best validation perplexity 180.00" in printed
    assert "Transformer + memory: 3 evaluations, best validation perplexity 170.00" in printed


def test_figure_spans_the_curves_on_its_log_axis(tmp_path, monkeypatch):
    """The y-range covers every curve worth reading and no more: down to the lowest (training) perplexity, up to
    twice the worst validation one, on the log axis (a range set before the switch to log would not survive it)."""
    from matplotlib.figure import Figure

    seen, save = {}, Figure.savefig

    def spy(fig, *args, **kwargs):
        seen["scale"], seen["ylim"] = fig.axes[0].get_yscale(), fig.axes[0].get_ylim()
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    a = fake_run(tmp_path / "a", [(600, 300.0), (1200, 180.0), (1800, 160.0)])
    main([str(tmp_path / "fig.png"), f"A={a}"])
    low, high = seen["ylim"]
    assert seen["scale"] == "log" and low == pytest.approx(0.9 * 150.0) and high == pytest.approx(2 * 300.0)


@pytest.mark.parametrize("bad, message", [("no-equals-sign", "is not LABEL=RUN_FOLDER"),
                                          ("X=/nonexistent/run", "has no metrics.jsonl")])
def test_command_errors_are_one_line(tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "fig.png"), bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
