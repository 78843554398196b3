"""The course's encoder-decoder Transformer LM (targets fed to the decoder) against hwlm's decoder-only Transformer:
the future-leak check catches the first and passes the second, and the comparison command runs end to end."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import hwlm  # noqa: F401
from _toy import write_toy_corpus
from hwlm.cli.course import main
from hwlm.research.course import CourseTransformerLM, changes_past_logits, compare_with_hwlm

VOCAB = 40


def ids(time: int = 16, seed: int = 0) -> torch.LongTensor:
    return torch.randint(0, VOCAB, (1, time), generator=torch.Generator().manual_seed(seed))


def test_the_leak_check_catches_the_course_model_at_every_position():
    torch.manual_seed(0)
    model = CourseTransformerLM(VOCAB, width=16, heads=2, layers=1, feed_forward=32).eval()
    window = ids(17)
    for t in (0, 7, 14):
        assert changes_past_logits(model.course_logits, window, t, VOCAB)  # the target it predicts is its input
        assert not changes_past_logits(model.past_only_logits, window, t, VOCAB)  # honest use: causal


@pytest.mark.parametrize("memory", [None, 4])
def test_hwlm_transformer_never_sees_the_future_with_or_without_memory(memory):
    extra = {"position_embedding_type": "alibi", "memory_length": memory} if memory else {}
    config = AutoConfig.for_model("hwlm_transformer", vocab_size=VOCAB, hidden_size=16, num_attention_heads=2,
                                  num_hidden_layers=2, intermediate_size=32, **extra)
    model = AutoModelForCausalLM.from_config(config).eval()
    for t in range(15):
        assert not changes_past_logits(lambda x: model(input_ids=x).logits, ids(), t, VOCAB)


def test_targets_fed_to_the_decoder_give_an_impossible_training_curve_and_a_collapsing_generation():
    g = torch.Generator().manual_seed(0)
    passage = torch.randint(0, 50, (400,), generator=g)
    report = compare_with_hwlm(passage.repeat(20), passage.repeat(2), 50, steps=150, width=32, log_every=50)
    course, ours = "course encoder-decoder", "hwlm_transformer"
    assert report.sees_the_future == {course: True, ours: False}
    # The course model's own loss says it is far better than it is given only the past; hwlm's does not.
    assert report.validation_perplexity[course] > 10 * report.train_perplexity[course]
    assert report.validation_perplexity[ours] < 1.5 * report.train_perplexity[ours]
    assert report.validation_perplexity[course] > 2 * report.validation_perplexity[ours]
    # Fed its own outputs, the course model copies them: its samples repeat the word before; a causal model's do not.
    assert report.repeat_rate[course] >= 0.5 > 0.2 >= report.repeat_rate[ours]
    assert [step for step, _ in report.curves[course]] == [50, 100, 150]


def test_command_writes_the_comparison(tmp_path):
    files = write_toy_corpus(tmp_path / "text")
    out = tmp_path / "out"
    main(["--max_train_steps", "6", "--hidden_size", "16", "--num_attention_heads", "2", "--max_eval_windows", "5",
          "--output_dir", str(out), *[x for k, v in files.items() for x in (f"--{k}", v)]])
    result = json.loads((out / "course.json").read_text())
    assert (out / "course.png").stat().st_size > 1000
    assert result["sees_the_future"] == {"course encoder-decoder": True, "hwlm_transformer": False}
    assert set(result["validation_perplexity"]) == set(result["continuation"]) == set(result["curves"])
    assert result["settings"]["max_train_steps"] == 6 and result["prompt"]


def test_command_refuses_heads_that_do_not_divide_the_width(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--hidden_size", "10", "--num_attention_heads", "4"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--hidden_size 10 must be a multiple of --num_attention_heads 4" in err and "Traceback" not in err
