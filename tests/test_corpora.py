"""Named corpora: local copies via HWLM_DATA_DIR, downloads from a loopback server (and failing ones), the
content-keyed cache of local files, presets naming their corpus, and the WikiText-103 preset at toy scale."""

import hashlib
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from file_server import start_file_server
from hwlm import corpora
from hwlm.data import DataArguments, describe_source, load_corpus, load_or_train_tokenizer, load_prepared, prepare_datasets

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HWLM_SHARED_DATA", REPO.parent / "shared" / "data"))
TEXTS = {"train": " the cat sat \n\n a dog sat on the mat \n", "validation": " the dog \n", "test": " a cat \n"}


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")
    monkeypatch.setattr(corpora, "RETRY_WAIT_S", 0.0)
    monkeypatch.delenv(corpora.DATA_DIR_ENV, raising=False)
    return tmp_path / "hf_datasets_cache"


@pytest.fixture
def server(monkeypatch):
    import huggingface_hub.constants

    # The loopback server stands in for the network, so these tests pass under CI's HF_HUB_OFFLINE=1 too: the
    # downloads go through huggingface_hub's session, which refuses every request in offline mode.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    srv = start_file_server()
    monkeypatch.setenv(corpora.PTB_URL_ENV, srv.url + "/ptb")
    yield srv
    srv.shutdown()


@pytest.fixture
def toy_ptb(monkeypatch, server):
    """A corpus registered like PTB (text files, SHA-256 checked, line counts), served by the loopback server."""
    data = {s: t.encode() for s, t in TEXTS.items()}
    toy = replace(corpora.NAMED_CORPORA["ptb"], name="toy-ptb",
                  sha256={s: hashlib.sha256(b).hexdigest() for s, b in data.items()},
                  lines={s: t.count("\n") for s, t in TEXTS.items()})
    for split, (name,) in toy.remote.items():
        server.files[f"/ptb/{name}"] = data[split]
    monkeypatch.setitem(corpora.NAMED_CORPORA, "toy-ptb", toy)
    return toy


def cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_download_once_then_from_the_cache(toy_ptb, server, datasets_cache):
    corpus = load_corpus(DataArguments(dataset_name="toy-ptb"))
    assert [corpus[s]["text"][:] for s in ("train", "validation", "test")] == [
        [" the cat sat ", "", " a dog sat on the mat "], [" the dog "], [" a cat "]]
    asked = len(server.requests)
    assert asked == 3
    again = load_corpus(DataArguments(dataset_name="TOY-PTB"))  # names are case-insensitive
    assert len(server.requests) == asked  # served from the datasets cache folder, no new request
    assert again["train"]["text"][:] == corpus["train"]["text"][:]
    source = describe_source(DataArguments(dataset_name="toy-ptb"))
    assert source["kind"] == "named" and source["origin"] == "download"
    assert source["fingerprints"]["train"][0]["size"] == len(TEXTS["train"].encode())


@pytest.mark.parametrize("failure", ["500", "truncate"])
def test_failing_server_gives_a_clear_error_and_leaves_nothing_half_written(toy_ptb, server, datasets_cache, failure):
    server.fail["/ptb/ptb.test.txt"] = failure
    with pytest.raises(ConnectionError, match=r"could not download 'toy-ptb' \(test\): .*ptb\.test\.txt.*after 3 "
                                              r"attempts.*HWLM_DATA_DIR.*--train_file"):
        load_corpus(DataArguments(dataset_name="toy-ptb"))
    assert server.requests.count(("GET", "/ptb/ptb.test.txt")) == 3  # bounded retries
    downloads = corpora.download_dir()
    assert sorted(p.name.split("-", 1)[1] for p in downloads.iterdir()) == ["ptb.train.txt", "ptb.valid.txt"]
    for p in downloads.iterdir():  # only complete, checked files; no temporary or partial file
        assert p.read_bytes() in {TEXTS["train"].encode(), TEXTS["validation"].encode()}
    assert not any("incomplete" in f or f.endswith(".arrow") for f in cache_files(datasets_cache))
    server.fail.clear()  # the next run downloads the missing file and works
    assert load_corpus(DataArguments(dataset_name="toy-ptb"))["test"]["text"][:] == [" a cat "]


def test_wrong_download_is_refused_and_removed(toy_ptb, server):
    server.files["/ptb/ptb.valid.txt"] = b"<html>a captive portal</html>\n"
    with pytest.raises(ValueError, match=r"validation file of 'toy-ptb' .* has SHA-256 [0-9a-f]{64}, expected .*removed"):
        load_corpus(DataArguments(dataset_name="toy-ptb"))
    assert not any(p.name.endswith("ptb.valid.txt") for p in corpora.download_dir().iterdir())


def _parquet(lines: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": lines}), buf)
    return buf.getvalue()


def test_wikitext_parquet_from_the_hub_endpoint(monkeypatch, server):
    """The Hub's Salesforce/wikitext parquet files, read from HF_ENDPOINT (the loopback server here)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    rows = {"train": ["", " = Title = \n", " the cat sat \n"], "validation": [" the dog \n"], "test": [" a cat \n"]}
    wt2 = corpora.NAMED_CORPORA["wikitext-2"]
    for split, (name,) in wt2.remote.items():
        server.files[f"/datasets/Salesforce/wikitext/resolve/main/wikitext-2-v1/{name}"] = _parquet(rows[split])
    toy = replace(wt2, name="toy-wt2", lines={s: len(r) for s, r in rows.items()})
    monkeypatch.setitem(corpora.NAMED_CORPORA, "toy-wt2", toy)
    corpus = load_corpus(DataArguments(dataset_name="toy-wt2"))
    assert corpus["train"]["text"][:] == rows["train"]
    prepared = prepare_datasets(corpus, load_or_train_tokenizer(DataArguments(dataset_name="toy-wt2"), corpus),
                                block_size=2)
    assert prepared.stats["train"]["tokens"] == 3 + 3 + 3  # "= Title =", "the cat sat", one <eos> per line
    monkeypatch.setitem(corpora.NAMED_CORPORA, "toy-wt2", replace(toy, lines={"train": 36_718}))
    with pytest.raises(ValueError, match=r"'toy-wt2' train has 3 lines in .*, expected 36,718: a truncated"):
        load_corpus(DataArguments(dataset_name="toy-wt2"))


def test_local_copies_in_hwlm_data_dir_win_and_need_no_network(tmp_path, monkeypatch, toy_ptb, server):
    folder = tmp_path / "data" / "toy-ptb"
    folder.mkdir(parents=True)
    for split, name in (("train", "ptb.train.txt"), ("validation", "ptb.valid.txt"), ("test", "ptb.test.txt")):
        (folder / name).write_text(TEXTS[split])
    monkeypatch.setenv(corpora.DATA_DIR_ENV, str(tmp_path / "data"))
    corpus = load_corpus(DataArguments(dataset_name="toy-ptb"))
    assert corpus["validation"]["text"][:] == [" the dog "]
    assert server.requests == []
    assert describe_source(DataArguments(dataset_name="toy-ptb"))["origin"] == "local copy"
    (folder / "ptb.test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"toy-ptb .*has no test file for 'toy-ptb': looked for "
                                                r"\['ptb.test.txt', 'test.txt'\].*unset HWLM_DATA_DIR"):
        load_corpus(DataArguments(dataset_name="toy-ptb"))


def test_local_files_override_a_named_corpus_but_not_a_hub_dataset(tmp_path):
    (tmp_path / "mine.txt").write_text("one two\nthree four\nfive six\n" * 20)
    corpus = load_corpus(DataArguments(dataset_name="ptb", train_file=str(tmp_path / "mine.txt")))
    assert corpus["train"]["text"][0] == "one two"  # the preset's corpus name gives way to the user's file
    with pytest.raises(ValueError, match="give either --dataset_name"):
        load_corpus(DataArguments(dataset_name="someone/corpus", train_file=str(tmp_path / "mine.txt")))


def test_raw_corpora_default_to_the_treebank_pre_tokenizer():
    from hwlm.data import PRETOKENIZED_SETTINGS, RAW_TEXT_SETTINGS, default_tokenizer_settings

    assert default_tokenizer_settings(DataArguments(dataset_name="wikitext-103-raw")) == RAW_TEXT_SETTINGS
    assert RAW_TEXT_SETTINGS["pre_tokenizer"] == "treebank"
    assert default_tokenizer_settings(DataArguments(dataset_name="wikitext-2")) == PRETOKENIZED_SETTINGS
    assert default_tokenizer_settings(DataArguments(train_file="x.txt")) == PRETOKENIZED_SETTINGS


# ---------------------------------------------------------------------------------- content-keyed cache


def test_replaced_file_with_the_same_mtime_is_not_served_from_the_cache(tmp_path):
    """Issue 14 item 4: the datasets cache of local files is keyed by content, not by path and mtime."""
    d = tmp_path / "c"
    d.mkdir()
    for name, text in (("train.txt", "red green blue\nred green\n"), ("valid.txt", "red\n"), ("test.txt", "blue\n")):
        (d / name).write_text(text)
    args = DataArguments(train_file=str(d / "train.txt"), validation_file=str(d / "valid.txt"),
                         test_file=str(d / "test.txt"), block_size=2)

    def prepare(out):
        corpus = load_corpus(args)
        return prepare_datasets(corpus, load_or_train_tokenizer(args, corpus), block_size=2, output_dir=out,
                                source=describe_source(args))

    first = prepare(tmp_path / "p1")
    stat = os.stat(d / "train.txt")
    (d / "train.txt").write_text("cyan pink gray\ncyan gold\n")  # other words, same length and mtime
    os.utime(d / "train.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(d / "train.txt").st_mtime_ns == stat.st_mtime_ns and os.stat(d / "train.txt").st_size == stat.st_size
    second = prepare(tmp_path / "p2")
    tok = second.tokenizer
    words = tok.convert_ids_to_tokens(load_prepared(tmp_path / "p2").stream_tensor("train").tolist())
    assert words == ["cyan", "pink", "gray", "<eos>", "cyan", "gold", "<eos>"]
    assert "red" not in tok.get_vocab() and "red" in first.tokenizer.get_vocab()
    meta1 = json.loads((tmp_path / "p1" / "hwlm_data.json").read_text())["source"]["fingerprints"]["train"]
    meta2 = json.loads((tmp_path / "p2" / "hwlm_data.json").read_text())["source"]["fingerprints"]["train"]
    assert meta1["size"] == meta2["size"] and meta1["hash"] != meta2["hash"]
    assert meta2 == corpora.file_fingerprint(d / "train.txt")


def test_file_fingerprint_streams_in_chunks(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    whole = corpora.file_fingerprint(path)
    assert corpora.file_fingerprint(path, chunk_bytes=7) == whole and whole["size"] == 256_000
    path.write_bytes(bytes(range(256)) * 999 + bytes(range(1, 257 - 1)) + b"\x00")
    assert corpora.file_fingerprint(path)["hash"] != whole["hash"]


# ---------------------------------------------------------------------------------- presets


PRESETS = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_names_its_corpus(name):
    preset = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    assert not {"train_file", "validation_file", "test_file"} & set(preset), "presets name corpora, not paths"
    if name == "quickstart":
        assert "dataset_name" not in preset  # the embedded corpus: no download at all
    else:
        assert corpora.named_corpus(preset["dataset_name"]) is not None


# The shared data holds PTB and WikiText-2; the WikiText-103 preset's corpus resolves like WikiText-2's (same
# registry, same parquet source) and its settings run at toy scale below.
LOCAL_PRESETS = [n for n in PRESETS if n not in ("quickstart", "wikitext103-transformer")]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", LOCAL_PRESETS)
def test_presets_run_offline_from_local_copies(name, monkeypatch):
    """What a preset's dataset_name resolves to with HWLM_DATA_DIR=../shared/data: the classic files, offline."""
    preset = yaml.safe_load((REPO / "presets" / f"{name}.yaml").read_text())
    corpus = corpora.named_corpus(preset["dataset_name"])
    if not (SHARED_DATA / corpus.name).is_dir():
        pytest.skip(f"{SHARED_DATA / corpus.name} not present (set HWLM_SHARED_DATA to the shared data folder)")
    monkeypatch.setenv(corpora.DATA_DIR_ENV, str(SHARED_DATA))
    monkeypatch.setenv(corpora.PTB_URL_ENV, "http://127.0.0.1:9/unreachable")  # a download would fail
    loaded = load_corpus(DataArguments(dataset_name=preset["dataset_name"]))
    assert {s: len(ds) for s, ds in loaded.items()} == corpus.lines


def test_wikitext103_preset_at_toy_scale(tmp_path):
    """The WikiText-103 preset's settings (blocks, AdamW, cosine, adaptive softmax) on a toy corpus and model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from _toy import write_toy_corpus
    from hwlm.cli.train import run
    from hwlm.training.arguments import parse_config_overrides

    preset = yaml.safe_load((REPO / "presets" / "wikitext103-transformer.yaml").read_text())
    cfg = preset["config_overrides"]
    assert cfg["adaptive_softmax_cutoffs"] == [20000, 60000] and preset["dataset_name"] == "wikitext-103"
    # the parameter count the preset's comment states, at WikiText-103's vocabulary (meta device: no memory)
    with torch.device("meta"):
        big = AutoModelForCausalLM.from_config(AutoConfig.for_model("hwlm_transformer", vocab_size=267_736, **cfg))
    assert round(sum(p.numel() for p in big.parameters()) / 1e6, 1) == 209.9
    toy = dict(preset, config_overrides=dict(cfg, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=32, max_position_embeddings=16,
                                              adaptive_softmax_cutoffs=[20, 50]),
               block_size=16, eval_stride=8, per_device_train_batch_size=4, per_device_eval_batch_size=4,
               num_warmup_steps=1, max_train_steps=3, mixed_precision="no", checkpointing_steps="epoch",
               output_dir=str(tmp_path / "out"))
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(toy))
    flags = write_toy_corpus(tmp_path / "text")
    argv = ["--config", str(tmp_path / "toy.yaml"), "--disable_tqdm"]
    for key, value in flags.items():  # local files override the preset's corpus name
        argv += [f"--{key}", value]
    results = run(argv)
    assert results["train_steps"] == 3 and results["test_perplexity"] > 1
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["adaptive_softmax_cutoffs"] == [20, 50] and saved["model_type"] == "hwlm_transformer"
