"""Model card rendering and the folder upload against a Hub on loopback (no network)."""

from pathlib import Path

import pytest
import yaml

import _toy  # noqa: F401
from hub_server import push_folder

REPO = Path(__file__).resolve().parents[1]


def test_model_card_has_the_hub_metadata():
    from transformers import AutoConfig

    import hwlm  # noqa: F401
    from hwlm.hub import render_model_card

    cfg = AutoConfig.for_model("hwlm_lstm", vocab_size=100, hidden_size=16)
    card = render_model_card(
        model_name="tiny", config=cfg, command="hwlm-train --config presets/quickstart.yaml",
        results={"validation_perplexity": 12.3456, "validation_loss": 2.5, "validation_num_tokens": 10,
                 "test_perplexity": 13.0, "eval_method": "stream"},
        dataset_name="Salesforce/wikitext", settings={"bptt": 35},
    )
    text = str(card)
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["datasets"] == ["Salesforce/wikitext"] and meta["license"] == "apache-2.0"
    assert meta["metrics"] == ["perplexity"]
    values = {r["metrics"][0]["name"]: r["metrics"][0]["value"] for r in meta["model-index"][0]["results"]}
    assert values == {"validation perplexity": 12.35, "test perplexity": 13.0}
    assert "hwlm-train --config presets/quickstart.yaml" in text and "| validation | 12.35 |" in text


def test_push_uploads_the_whole_folder_to_a_loopback_hub(tmp_path):
    folder = tmp_path / "model"
    (folder / "checkpoints" / "step_1").mkdir(parents=True)
    for name, content in {"config.json": "{}", "model.safetensors": "weights", "tokenizer.json": "{}",
                          "README.md": "---\nlicense: mit\n---\n", "modeling_recurrent.py": "# code",
                          "all_results.json": "{}", "curves.png": "png"}.items():
        (folder / name).write_text(content)
    (folder / "checkpoints" / "step_1" / "optimizer.bin").write_text("big")
    proc, server = push_folder(folder)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "uploaded" in proc.stdout
        assert server.created and server.created[0]["name"] == "tiny-lm"
        assert set(server.files) == {"config.json", "model.safetensors", "tokenizer.json", "README.md",
                                     "modeling_recurrent.py", "all_results.json", "curves.png"}
        assert server.files["model.safetensors"] == b"weights"
        assert ("POST", "/api/models/someone/tiny-lm/commit/main") in server.requests
    finally:
        server.shutdown()


def test_push_refuses_a_folder_without_a_model(tmp_path):
    from hwlm.hub import push_folder

    with pytest.raises(FileNotFoundError, match=r"is not a model folder: \['config.json', 'model.safetensors'\] missing"):
        push_folder(tmp_path, "someone/x")


@pytest.mark.parametrize(
    "dataset_name, expected",
    [("ptb", ["ptb_text_only"]), ("wikitext-2-raw", ["Salesforce/wikitext"]), ("someone/corpus", ["someone/corpus"]),
     (None, None)],
)
def test_card_datasets_metadata_names_the_hub_dataset(dataset_name, expected, tmp_path):
    from transformers import AutoConfig

    import hwlm  # noqa: F401
    from hwlm.hub import render_model_card

    cfg = AutoConfig.for_model("hwlm_lstm", vocab_size=100, hidden_size=16)
    card = render_model_card(model_name="tiny", config=cfg, command="hwlm-train", results={"test_perplexity": 9.0},
                             dataset_name=dataset_name)
    meta = yaml.safe_load(str(card).split("---\n")[1])
    assert meta.get("datasets") == expected and meta["language"] == ["en"]
    local = tmp_path / "train.txt"
    local.write_text("a b\n")
    card = render_model_card(model_name="tiny", config=cfg, command="hwlm-train", results={}, dataset_name=str(local))
    assert "datasets" not in yaml.safe_load(str(card).split("---\n")[1])  # a local file is no Hub dataset
