"""The model card of a trained folder: the Hub metadata, and a usage snippet that runs where hwlm is not installed."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from _toy import lstm_flags, prepare_toy
from test_remote_code import LOADER


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from hwlm.cli.train import main as train_main

    root = tmp_path_factory.mktemp("card")
    out = root / "lstm"
    train_main(lstm_flags(prepare_toy(root), out))
    return out


def test_card_metadata_and_prompt_from_the_validation_text(trained):
    card = (trained / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["language"] == ["en"]
    prompt = re.search(r'tokenizer\("([^"]*)", return_tensors="pt"\)', card).group(1)
    words = prompt.split()
    assert len(words) == 4 and all(re.fullmatch(r"w\d+", w) for w in words)  # the toy corpus's own words
    valid_text = (trained.parent / "text" / "valid.txt").read_text()
    assert prompt in " ".join(valid_text.split())  # taken from the validation split, in order


def test_card_usage_snippet_runs_without_hwlm(trained, tmp_path):
    card = (trained / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("path/to/folder", str(trained))
    script = tmp_path / "snippet.py"
    # The blocker from test_remote_code (any `import hwlm` fails), then the card's code as a user pastes it.
    blocker = LOADER.split("import torch")[0]
    script.write_text(blocker + snippet + "\nassert 'hwlm' not in sys.modules\n")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()  # the generated text


def test_hwlm_eval_puts_plain_and_adapted_perplexities_on_the_card(trained, tmp_path):
    from hwlm.cli.evaluate import run as eval_run

    valid = trained.parent / "text" / "valid.txt"
    results = eval_run([
        "--model_name_or_path", str(trained), "--prepared_data_dir", str(trained.parent / "prepared"),
        "--splits", "test", "--per_device_eval_batch_size", "2", "--neural_cache", "--update_model_card",
    ])
    card = (trained / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    names = {m["name"]: m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]}
    assert names["test perplexity"] == round(results["test_perplexity"], 2)
    assert names["test perplexity (neural cache)"] == round(results["test_neural_cache_perplexity"], 2)
    assert f"| test, neural cache | {results['test_neural_cache_perplexity']:.2f} |" in card
    assert "hwlm-train" in card and valid.is_file()  # the run's own command is kept


def test_update_model_card_refuses_a_folder_hwlm_train_did_not_finish(trained, tmp_path, capsys):
    import shutil

    from hwlm.cli.evaluate import main as eval_main

    folder = tmp_path / "copy"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("checkpoints", "best_model"))
    (folder / "hwlm_run.json").unlink()
    with pytest.raises(SystemExit) as stop:
        eval_main(["--model_name_or_path", str(folder), "--prepared_data_dir", str(trained.parent / "prepared"),
                   "--update_model_card"])
    assert stop.value.code == 2
    assert "is not a folder hwlm-train finished" in capsys.readouterr().err
