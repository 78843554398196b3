"""A saved folder carries its own code: it loads with trust_remote_code=True where hwlm cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from hwlm.tokenization import train_word_tokenizer
from test_models import make_model, random_ids

# Runs in a fresh interpreter in which any `import hwlm...` fails, as on a machine without hwlm installed.
LOADER = textwrap.dedent(
    """
    import sys

    class BlockHwlm:
        def find_spec(self, name, path=None, target=None):
            if name == "hwlm" or name.startswith("hwlm."):
                raise ImportError("hwlm is blocked in this test")

    sys.meta_path.insert(0, BlockHwlm())
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    folder, ids_file, out_file = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    body = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert "hwlm" not in sys.modules
    ids = torch.load(ids_file, weights_only=True)
    logits = model(input_ids=ids).logits
    generated = model.generate(ids[:, :4], max_new_tokens=5, do_sample=False, eos_token_id=None)
    torch.save(
        {
            "logits": logits,
            "generated": generated,
            "last_hidden_state": body(input_ids=ids).last_hidden_state,
            "class": type(model).__module__,
            "classes": [type(m).__name__ for m in (model, body, classifier)],
            "tokens": tokenizer("w1 w2")["input_ids"],
        },
        out_file,
    )
    """
)


@pytest.mark.parametrize("name", ["rnn_tanh", "lstm_tied_projection", "transformer_sinusoidal", "transformer_memory"])
def test_folder_loads_without_hwlm(name, tmp_path):
    model = make_model(name)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer = train_word_tokenizer(["w1 w2 w3"])
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {
        "AutoConfig",
        "AutoModel",
        "AutoModelForCausalLM",
        "AutoModelForSequenceClassification",
    }
    for module_file in {ref.split(".")[0] for ref in config["auto_map"].values()}:
        assert (folder / f"{module_file}.py").exists()

    ids = random_ids()
    torch.save(ids, tmp_path / "ids.pt")
    script = tmp_path / "load.py"
    script.write_text(LOADER)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt")],
        check=True,
        cwd=tmp_path,  # not the repository root, so hwlm is not importable from the working directory either
        env=env,
        timeout=300,
    )
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert not result["class"].startswith("hwlm")
    stem = type(model).__name__[: -len("ForCausalLM")]
    assert result["classes"] == [f"{stem}ForCausalLM", f"{stem}Model", f"{stem}ForSequenceClassification"]
    assert result["tokens"] == tokenizer("w1 w2")["input_ids"]
    torch.testing.assert_close(result["logits"], model(input_ids=ids).logits)
    torch.testing.assert_close(
        result["last_hidden_state"], model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    )
    expected = model.generate(ids[:, :4], max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert torch.equal(result["generated"], expected)
