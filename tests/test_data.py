"""Corpus loading, the line convention, streams/blocks, the prepared folder, bad input and the commands."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import Dataset

import hwlm.data as hdata
from hwlm.data import (
    DataArguments,
    describe_source,
    embedded_corpus_lines,
    embedded_split_of,
    flat_ids,
    load_corpus,
    load_or_train_tokenizer,
    load_prepared,
    prepare_datasets,
)
from hwlm.tokenization import TokenizerArguments, load_tokenizer, tokenizer_fingerprint, train_word_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HWLM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

TRAIN = "the cat sat on the mat\n\nthe dog sat on the log\na cat and a dog\n<unk> cat sat\n\nthe end\n"
VALID = "the cat sat\n\na dog on a mat\n"
TEST = "a zebra sat\nthe cat\n"


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """A private datasets cache per test: no cross-test cache hits, nothing written to ~/.cache."""
    import datasets

    cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


@pytest.fixture
def corpus_files(tmp_path):
    """Tiny train/valid/test text files in the PTB layout (one sentence per line, blank lines)."""
    d = tmp_path / "corpus"
    d.mkdir()
    for name, text in (("train.txt", TRAIN), ("valid.txt", VALID), ("test.txt", TEST)):
        (d / name).write_text(text, encoding="utf-8")
    return d


def file_args(d, **kw):
    return DataArguments(train_file=str(d / "train.txt"), validation_file=str(d / "valid.txt"),
                         test_file=str(d / "test.txt"), **kw)


def classic_tokens(path):
    """pytorch/examples word_language_model/data.py: words of each line + one <eos>."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            out += line.split() + ["<eos>"]
    return out


def prepare_files(d, block_size=4, **kw):
    args = file_args(d, block_size=block_size)
    corpus = load_corpus(args)
    tok = load_or_train_tokenizer(args, corpus)
    return prepare_datasets(corpus, tok, block_size=block_size, source=describe_source(args), **kw), tok


# ------------------------------------------------------------------------------ line convention


def test_line_convention_matches_the_classic_loop(corpus_files):
    prepared, tok = prepare_files(corpus_files)
    for split, name in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        expected = classic_tokens(corpus_files / name)
        stream = prepared.stream_tensor(split)
        got = tok.convert_ids_to_tokens(stream.tolist())
        known = set(tok.get_vocab())
        assert got == [w if w in known else "<unk>" for w in expected]
        rows = prepared.streams[split]["input_ids"]
        lines = (corpus_files / name).read_text().split("\n")[:-1]
        assert len(rows) == len(lines)
        for row, line in zip(rows, lines):
            assert row[-1] == tok.eos_token_id and len(row) == len(line.split()) + 1  # empty line -> [<eos>]
        stats = prepared.stats[split]
        assert stats["tokens"] == len(expected) and stats["lines"] == len(lines)
        assert stats["words"] == len(expected) - len(lines)
    # "zebra" is not in train: one unknown word out of 5 in test; "<unk>" in train counts as unknown
    assert prepared.stats["test"]["unk"] == 1 and prepared.stats["test"]["oov_rate"] == pytest.approx(1 / 5)
    assert prepared.stats["train"]["unk"] == 1


def test_tokenizer_trained_for_files_is_the_classic_vocabulary(corpus_files):
    args = file_args(corpus_files)
    tok = load_or_train_tokenizer(args, load_corpus(args))
    words = set((corpus_files / "train.txt").read_text().split())
    assert set(tok.get_vocab()) == words | {"<unk>", "<eos>", "<pad>"}
    assert len(tok) == len(words | {"<unk>"}) + 2


def test_stream_tensor_and_blocks(corpus_files):
    prepared, tok = prepare_files(corpus_files, block_size=4)
    stream = prepared.stream_tensor("train")
    assert stream.dtype == torch.long and stream.dim() == 1
    assert stream.tolist() == [i for row in prepared.streams["train"]["input_ids"] for i in row]
    blocks = prepared.blocks["train"]
    n = len(stream) // 4
    assert len(blocks) == n == prepared.stats["train"]["blocks"]
    ids = torch.tensor(blocks["input_ids"])
    assert ids.shape == (n, 4)
    assert torch.equal(ids.reshape(-1), stream[: n * 4])
    assert blocks["labels"] == blocks["input_ids"]
    torch_blocks = blocks.with_format("torch")[:2]
    assert torch_blocks["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="split 'dev' is not prepared"):
        prepared.stream_tensor("dev")


def test_windows_line_endings_tabs_and_unicode_spaces_are_whitespace(tmp_path, corpus_files):
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        text = (corpus_files / name).read_text()
        text = text.replace("\n", "\r\n").replace("the ", "the\t").replace("a ", "a\u00a0").replace("sat", "\u3000sat ")
        (odd / name).write_bytes(text.encode("utf-8"))
    plain, tok = prepare_files(corpus_files)
    weird, tok2 = prepare_files(odd)
    assert tok2.get_vocab() == tok.get_vocab()
    for split in ("train", "validation", "test"):
        assert torch.equal(weird.stream_tensor(split), plain.stream_tensor(split))


# ------------------------------------------------------------------------------ formats and splits


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_structured_formats_with_a_text_column(tmp_path, corpus_files, fmt):
    import pandas as pd

    paths = {}
    for split, name in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")):
        lines = (corpus_files / name).read_text().split("\n")[:-1]
        frame = pd.DataFrame({"id": range(len(lines)), "content": lines})
        path = tmp_path / f"{split}.{fmt}"
        if fmt in ("json", "jsonl"):
            frame.to_json(path, orient="records", lines=True)
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
        paths[split] = str(path)
    args = DataArguments(train_file=paths["train"], validation_file=paths["validation"], test_file=paths["test"],
                         text_column="content")
    corpus = load_corpus(args)
    assert corpus["train"].column_names == ["text"]
    tok = load_or_train_tokenizer(args, corpus)
    prepared = prepare_datasets(corpus, tok, block_size=4)
    reference, _ = prepare_files(corpus_files)
    for split in ("train", "validation", "test"):
        assert torch.equal(prepared.stream_tensor(split), reference.stream_tensor(split))
    with pytest.raises(ValueError, match=r"no column 'body' \(columns: .*'content'.*--text_column"):
        load_corpus(DataArguments(train_file=paths["train"], text_column="body"))


def test_missing_validation_and_test_are_carved_off_the_end_of_train(tmp_path):
    lines = [f"line {i} word" for i in range(40)]
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n")
    corpus = load_corpus(DataArguments(train_file=str(tmp_path / "all.txt"), validation_split_percentage=10))
    assert (len(corpus["train"]), len(corpus["validation"]), len(corpus["test"])) == (32, 4, 4)
    assert corpus["validation"]["text"] == lines[36:]
    assert corpus["test"]["text"] == lines[32:36]
    assert corpus["train"]["text"] == lines[:32]
    with pytest.raises(ValueError, match="the train split has 1 lines, too few"):
        (tmp_path / "one.txt").write_text("just one line\n")
        load_corpus(DataArguments(train_file=str(tmp_path / "one.txt")))


# ------------------------------------------------------------------------------ bad input


def test_missing_file_is_named(corpus_files):
    with pytest.raises(FileNotFoundError, match=r"--validation_file '.*nope\.txt' does not exist"):
        load_corpus(DataArguments(train_file=str(corpus_files / "train.txt"),
                                  validation_file=str(corpus_files / "nope.txt")))


def test_unknown_dataset_is_named(monkeypatch):
    import datasets
    import huggingface_hub

    # offline, so the test never touches the network
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="dataset 'nobody/no-such-corpus-hwlm' .*could not be found"):
        load_corpus(DataArguments(dataset_name="nobody/no-such-corpus-hwlm"))


def test_conflicting_or_incomplete_sources(corpus_files):
    with pytest.raises(ValueError, match="give either --dataset_name .* or local files"):
        load_corpus(DataArguments(dataset_name="Salesforce/wikitext", train_file=str(corpus_files / "train.txt")))
    with pytest.raises(ValueError, match="--train_file is required"):
        load_corpus(DataArguments(validation_file=str(corpus_files / "valid.txt")))
    (corpus_files / "t.json").write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="mix formats"):
        load_corpus(DataArguments(train_file=str(corpus_files / "train.txt"),
                                  validation_file=str(corpus_files / "t.json")))


def test_empty_corpus_and_split_without_words_are_errors(corpus_files):
    (corpus_files / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"--test_file '.*empty\.txt' is empty \(0 bytes\)"):
        load_corpus(DataArguments(train_file=str(corpus_files / "train.txt"),
                                  validation_file=str(corpus_files / "valid.txt"),
                                  test_file=str(corpus_files / "empty.txt")))
    (corpus_files / "blank.txt").write_text("\n \n\t\n")
    args = DataArguments(train_file=str(corpus_files / "train.txt"), validation_file=str(corpus_files / "blank.txt"),
                         test_file=str(corpus_files / "test.txt"))
    corpus = load_corpus(args)
    tok = load_or_train_tokenizer(args, corpus)
    with pytest.raises(ValueError, match="split 'validation' has no words: its 3 lines are all empty"):
        prepare_datasets(corpus, tok, block_size=2)
    with pytest.raises(ValueError, match="has no words"):
        load_or_train_tokenizer(DataArguments(train_file=str(corpus_files / "blank.txt")),
                                load_corpus(DataArguments(train_file=str(corpus_files / "blank.txt"),
                                                          validation_file=str(corpus_files / "valid.txt"),
                                                          test_file=str(corpus_files / "test.txt"))))


def test_invalid_utf8_names_file_and_line_or_is_replaced_on_request(corpus_files):
    bad = corpus_files / "bad.txt"
    bad.write_bytes(b"good line\ncaf\xe9 latin1\nok\n")
    args = dict(validation_file=str(corpus_files / "valid.txt"), test_file=str(corpus_files / "test.txt"))
    with pytest.raises(ValueError, match=r"bad\.txt: line 2, byte 4 is not valid UTF-8.*--replace_invalid_utf8"):
        load_corpus(DataArguments(train_file=str(bad), **args))
    corpus = load_corpus(DataArguments(train_file=str(bad), replace_invalid_utf8=True, **args))
    assert corpus["train"]["text"] == ["good line", "caf\ufffd latin1", "ok"]


def test_invalid_utf8_found_across_chunks(tmp_path):
    bad = tmp_path / "big.txt"
    bad.write_bytes(b"word word\n" * 1000 + b"\xff\n")
    with pytest.raises(ValueError, match=r"line 1001, byte 1"):
        hdata.check_utf8(bad, chunk_bytes=64)
    (tmp_path / "fine.txt").write_bytes("é ü 中\n".encode() * 100)
    hdata.check_utf8(tmp_path / "fine.txt", chunk_bytes=7)  # multi-byte characters across chunk reads


def test_block_size_larger_than_a_split_is_an_error(corpus_files):
    with pytest.raises(ValueError, match=r"block_size=20 is larger than split 'validation', which has 11 tokens.*--block_size 11"):
        prepare_files(corpus_files, block_size=20)
    with pytest.raises(ValueError, match="block_size=0 must be >= 1"):
        prepare_files(corpus_files, block_size=0)


# ------------------------------------------------------------------------------ cache, workers, folder


def test_second_run_hits_the_datasets_cache(corpus_files):
    first, _ = prepare_files(corpus_files)
    files = [f["filename"] for f in first.streams["train"].cache_files]
    assert files and all("cache-" in Path(f).name for f in files)
    mtimes = [os.stat(f).st_mtime_ns for f in files]
    second, _ = prepare_files(corpus_files)
    assert [f["filename"] for f in second.streams["train"].cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == mtimes  # loaded, not rewritten
    third, _ = prepare_files(corpus_files, overwrite_cache=True)
    assert [os.stat(f["filename"]).st_mtime_ns for f in third.streams["train"].cache_files] != mtimes
    assert torch.equal(third.stream_tensor("train"), first.stream_tensor("train"))


def test_cache_key_is_the_tokenizers_content(corpus_files):
    """The map's cache key hashes the encoder as its tokenizer's content: an equal tokenizer loaded afresh hits the
    cache, a tokenizer with other ids misses it (its ids are never served from the first one's cache)."""
    args = file_args(corpus_files, block_size=4)
    corpus = load_corpus(args)
    tok = load_or_train_tokenizer(args, corpus)
    first = prepare_datasets(corpus, tok, block_size=4)
    tok.save_pretrained(corpus_files / "tok")
    reloaded = prepare_datasets(corpus, load_tokenizer(str(corpus_files / "tok")), block_size=4)
    assert reloaded.streams["train"].cache_files == first.streams["train"].cache_files
    other_tok = train_word_tokenizer(["completely different words"])
    other = prepare_datasets(corpus, other_tok, block_size=4)
    assert other.streams["train"].cache_files != first.streams["train"].cache_files
    assert other.token_files["train"] != first.token_files["train"]
    assert not torch.equal(other.stream_tensor("train"), first.stream_tensor("train"))


def test_encoder_pickles_as_its_tokenizer(corpus_files):
    import pickle

    args = file_args(corpus_files, block_size=4)
    tok = load_or_train_tokenizer(args, load_corpus(args))
    encoder = hdata.ArrowLineEncoder(tok)
    copy = pickle.loads(pickle.dumps(encoder))
    lines = pa.array(["the cat sat", "", "zebra <unk> the"])
    assert copy.encode(lines).to_pylist() == encoder.encode(lines).to_pylist()
    assert pickle.dumps(copy) == pickle.dumps(encoder)  # what datasets hashes for the cache key


def test_flat_ids_reads_rows_as_the_dataset_presents_them():
    ds = Dataset.from_dict({"input_ids": [[1, 2], [3], [4, 5, 6]]})
    assert flat_ids(ds).tolist() == [1, 2, 3, 4, 5, 6]
    assert flat_ids(ds.select([2, 0])).tolist() == [4, 5, 6, 1, 2]
    assert flat_ids(ds.select([])).tolist() == []


def test_num_proc_gives_the_same_streams(corpus_files):
    one, _ = prepare_files(corpus_files)
    two, _ = prepare_files(corpus_files, num_proc=2)
    for split in ("train", "validation", "test"):
        assert torch.equal(one.stream_tensor(split), two.stream_tensor(split))


def test_prepared_folder_round_trip_and_fingerprint_check(tmp_path, corpus_files):
    prepared, tok = prepare_files(corpus_files, output_dir=tmp_path / "prep")
    out = tmp_path / "prep"
    assert {p.name for p in out.iterdir()} == {"streams", "blocks", "tokens", "tokenizer", "hwlm_data.json"}
    meta = json.loads((out / "hwlm_data.json").read_text())
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
    assert meta["vocab_size"] == len(tok) and meta["block_size"] == 4
    assert meta["splits"]["train"]["tokens"] == len(classic_tokens(corpus_files / "train.txt"))
    assert meta["source"]["kind"] == "files"
    loaded = load_prepared(out)
    assert loaded.tokenizer_fingerprint == prepared.tokenizer_fingerprint
    for split in ("train", "validation", "test"):
        assert torch.equal(loaded.stream_tensor(split), prepared.stream_tensor(split))
        assert loaded.blocks[split]["input_ids"] == prepared.blocks[split]["input_ids"]
    assert load_prepared(out, tokenizer=tok).vocab_size == len(tok)
    other = train_word_tokenizer(["completely different words"])
    other.save_pretrained(tmp_path / "other_tok")
    with pytest.raises(ValueError, match=r"prepared with a different tokenizer: fingerprint .*other_tok"):
        load_prepared(out, tokenizer=tmp_path / "other_tok")
    with pytest.raises(ValueError, match="prepared with a different tokenizer"):
        load_prepared(out, tokenizer=other)
    with pytest.raises(FileNotFoundError, match="not a prepared data folder.*hwlm-prepare --output_dir"):
        load_prepared(tmp_path / "corpus")


# ------------------------------------------------------------------------------ embedded corpus


def test_embedded_corpus_split_is_deterministic_and_complete():
    import pydoc_data.topics

    keys = sorted(pydoc_data.topics.topics)
    splits = {k: embedded_split_of(k) for k in keys}
    assert set(splits.values()) == {"train", "validation", "test"}
    # pinned: the split of a key depends only on its SHA-256
    assert embedded_split_of("assert") == embedded_split_of("assert")
    lines = embedded_corpus_lines()
    total = sum(len(hdata.split_lines(pydoc_data.topics.topics[k])) for k in keys)
    assert sum(len(v) for v in lines.values()) == total
    assert all(len(v) > 100 for v in lines.values())


def test_embedded_corpus_loads_and_uses_the_committed_tokenizer():
    args = DataArguments()
    corpus = load_corpus(args)
    assert {s: len(ds) for s, ds in corpus.items()} == {s: len(v) for s, v in embedded_corpus_lines().items()}
    tok = load_or_train_tokenizer(args, corpus)
    committed = json.loads((REPO / "tokenizer" / "hwlm_tokenizer.json").read_text())
    assert tokenizer_fingerprint(tok) == committed["fingerprint"]
    # overriding a setting trains a new one on the embedded train split
    small = load_or_train_tokenizer(args, corpus, TokenizerArguments(vocab_size=50))
    assert len(small) == 50
    assert describe_source(args)["kind"] == "embedded"


# ------------------------------------------------------------------------------ commands


def test_prepare_command_in_process(tmp_path, corpus_files, capsys):
    from hwlm.cli.prepare import main

    out = tmp_path / "prep"
    main(["--train_file", str(corpus_files / "train.txt"), "--validation_file", str(corpus_files / "valid.txt"),
          "--test_file", str(corpus_files / "test.txt"), "--block_size", "4", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    assert "| validation | 3 | 8 | 11 | 0.00% | 2 |" in printed
    assert "| test | 2 | 5 | 7 | 20.00% | 1 |" in printed
    assert f"saved to {out}" in printed
    assert load_prepared(out).stats["train"]["tokens"] == len(classic_tokens(corpus_files / "train.txt"))


def test_prepare_command_from_a_json_config(tmp_path, corpus_files, capsys):
    from hwlm.cli.prepare import main

    config = tmp_path / "prep.json"
    config.write_text(json.dumps({"train_file": str(corpus_files / "train.txt"), "block_size": 3,
                                  "validation_split_percentage": 30, "output_dir": str(tmp_path / "p")}))
    main([str(config)])
    assert json.loads((tmp_path / "p" / "hwlm_data.json").read_text())["block_size"] == 3


def test_prepare_command_on_the_embedded_corpus(tmp_path, capsys):
    from hwlm.cli.prepare import main

    main(["--output_dir", str(tmp_path / "prep"), "--block_size", "64"])
    meta = json.loads((tmp_path / "prep" / "hwlm_data.json").read_text())
    assert meta["source"]["kind"] == "embedded" and meta["source"]["source"].startswith("pydoc_data.topics")
    committed = json.loads((REPO / "tokenizer" / "hwlm_tokenizer.json").read_text())
    assert meta["tokenizer_fingerprint"] == committed["fingerprint"]
    assert all(s["blocks"] > 0 for s in meta["splits"].values())


def test_tokenizer_command_in_process(tmp_path, corpus_files, capsys):
    from transformers import AutoTokenizer

    from hwlm.cli.train_tokenizer import main

    out = tmp_path / "tok"
    main(["--train_file", str(corpus_files / "train.txt"), "--validation_file", str(corpus_files / "valid.txt"),
          "--test_file", str(corpus_files / "test.txt"), "--vocab_size", "6", "--lowercase", "--pre_tokenizer", "words",
          "--output_dir", str(out)])
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 6 and set(tok.get_vocab()) == {"<unk>", "<eos>", "<pad>", "the", "cat", "sat"}
    readme = (out / "README.md").read_text()
    assert "- vocab_size: 6" in readme and "- pre_tokenizer: words" in readme and "train.txt" in readme
    from hwlm.cli.train_tokenizer import run  # run raises; main turns the error into exit status 2

    with pytest.raises(ValueError, match="vocab_size=2 is smaller than the 3 special tokens"):
        run(["--train_file", str(corpus_files / "train.txt"), "--vocab_size", "2", "--output_dir", str(out)])


def test_help_lists_the_hugging_face_flag_names(capsys):
    from hwlm.cli.prepare import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset_name", "--dataset_config_name", "--train_file", "--validation_file", "--test_file",
                 "--text_column", "--tokenizer_name", "--block_size", "--preprocessing_num_workers", "--output_dir",
                 "--overwrite_cache", "--replace_invalid_utf8", "--vocab_size", "--min_frequency", "--lowercase",
                 "--pre_tokenizer"):
        assert flag in text


def _command(console_script, script):
    exe = Path(sys.executable).with_name(console_script)
    return [str(exe)] if exe.exists() else [sys.executable, str(REPO / "scripts" / script)]


def test_prepare_command_as_a_subprocess(tmp_path, corpus_files):
    """The installed console script (or scripts/prepare_data.py) end to end, with a tokenizer folder."""
    train_word_tokenizer(["the cat sat on a mat"]).save_pretrained(tmp_path / "t")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(tmp_path / "cache"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    data = ["--train_file", str(corpus_files / "train.txt"), "--validation_file", str(corpus_files / "valid.txt"),
            "--test_file", str(corpus_files / "test.txt")]
    prep = subprocess.run(_command("hwlm-prepare", "prepare_data.py") + data
                          + ["--tokenizer_name", str(tmp_path / "t"), "--block_size", "4",
                             "--output_dir", str(tmp_path / "p")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    assert "| test | 2 | 5 | 7 | 20.00% | 1 |" in prep.stdout  # "zebra" is unknown
    assert load_prepared(tmp_path / "p", tokenizer=tmp_path / "t").stats["test"]["tokens"] == 7


def test_tokenizer_script_wrapper_runs(tmp_path, corpus_files, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", ["train_tokenizer.py", "--train_file", str(corpus_files / "train.txt"),
                                      "--output_dir", str(tmp_path / "t")])
    runpy.run_path(str(REPO / "scripts" / "train_tokenizer.py"), run_name="__main__")
    assert (tmp_path / "t" / "tokenizer.json").exists()


# ------------------------------------------------------------------------------ shared benchmark corpora

EXPECTED = {
    "ptb": ({"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"},
            {"train": 929_589, "validation": 73_760, "test": 82_430}, 10_000),
    "wikitext-2": ({"train": "train.txt", "validation": "valid.txt", "test": "test.txt"},
                   {"train": 2_088_628, "validation": 217_646, "test": 245_569}, 33_278),
}


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["ptb", "wikitext-2"])
def test_shared_corpora_exact_counts(name):
    files, tokens, classic_vocab = EXPECTED[name]
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (set HWLM_SHARED_DATA to the shared data folder)")
    args = DataArguments(train_file=str(folder / files["train"]), validation_file=str(folder / files["validation"]),
                         test_file=str(folder / files["test"]), block_size=35)
    corpus = load_corpus(args)
    tok = load_or_train_tokenizer(args, corpus)
    # the classic vocabulary (words incl. <unk>, plus <eos>) plus <pad>
    assert len(tok) == classic_vocab + 1
    prepared = prepare_datasets(corpus, tok, block_size=35)
    assert {s: st["tokens"] for s, st in prepared.stats.items()} == tokens
    assert {s: st["eos"] for s, st in prepared.stats.items()} == {s: len(ds) for s, ds in corpus.items()}
    # every valid/test word is in the train vocabulary: unknowns are exactly the corpus's own <unk>
    stream = prepared.stream_tensor("validation")
    assert len(stream) == tokens["validation"]
    assert np.count_nonzero(stream.numpy() == tok.pad_token_id) == 0


# ------------------------------------------------------------------------------ vectorized encoding, mmap streams

ODD_LINES = ["a\x1cb <unk>x don't", "", "  ", "zebra the", "the\u3000cat\u00a0<eos>", "1,000 well-known",
             " trailing spaces  ", "x<pad>y <unk><eos>", "É é ﬁ ＡＢ", "\t\r", None]


def backend_ids(tok, lines):
    return [e.ids + [tok.eos_token_id] for e in
            tok.backend_tokenizer.encode_batch([t or "" for t in lines], add_special_tokens=False)]


@pytest.mark.parametrize("settings", [{}, {"pre_tokenizer": "words", "lowercase": True, "nfkc": True},
                                      {"pre_tokenizer": "treebank"}, {"vocab_size": 6}])
def test_arrow_encoder_equals_the_tokenizer_on_every_test_corpus(settings):
    import pyarrow as pa

    from _toy import toy_lines
    from hwlm.data import ArrowLineEncoder

    corpora = [TRAIN.split("\n"), VALID.split("\n"), TEST.split("\n"), ODD_LINES, toy_lines(200, 3)]
    tok = train_word_tokenizer([line or "" for c in corpora[:3] + corpora[4:] for line in c] + ODD_LINES[:-1],
                               **settings)
    encoder = ArrowLineEncoder(tok)
    for lines in corpora:
        assert encoder.encode(pa.array(lines)).to_pylist() == backend_ids(tok, lines)
    # arrays sliced out of a larger buffer, as datasets hands them out (a pyarrow 26 split bug lives there)
    whole = pa.array(["x y", " the cat ", "a dog  ", "tail end "] * 3)
    for start in range(4):
        part = whole.slice(start, 5)
        assert encoder.encode(part).to_pylist() == backend_ids(tok, part.to_pylist())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["ptb", "wikitext-2"])
def test_arrow_encoder_equals_the_tokenizer_on_the_shared_corpora(name):
    files, _, _ = EXPECTED[name]
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    args = DataArguments(train_file=str(folder / files["train"]), validation_file=str(folder / files["validation"]),
                         test_file=str(folder / files["test"]))
    corpus = load_corpus(args)
    tok = load_or_train_tokenizer(args, corpus)
    prepared = prepare_datasets(corpus, tok, block_size=64)  # the vectorized path (Dataset.map over Arrow)
    for split, ds in corpus.items():
        expected = [i for row in backend_ids(tok, ds["text"][:]) for i in row]
        assert prepared.stream_tensor(split).tolist() == expected


def mapped_file(address: int):
    """The file mapped at ``address`` in this process (from /proc/self/maps), or None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else None
    return None


def test_streams_are_memory_mapped_and_blocks_are_views(tmp_path, corpus_files):
    prepared, tok = prepare_files(corpus_files, block_size=4, output_dir=tmp_path / "prep")
    loaded = load_prepared(tmp_path / "prep")
    stream = loaded.stream_tensor("train")
    reference = torch.tensor([i for row in prepared.streams["train"]["input_ids"] for i in row])
    assert torch.equal(stream, reference) and stream.dtype == torch.long
    blocks = loaded.block_tensor("train")
    assert blocks.shape == (len(stream) // 4, 4)
    assert blocks.tolist() == loaded.blocks["train"]["input_ids"]
    if Path("/proc/self/maps").exists():  # both tensors' memory is the file's pages, not a private copy
        token_file = str((tmp_path / "prep" / "tokens" / "train.npy").resolve())
        assert mapped_file(stream.data_ptr()) == token_file
        assert mapped_file(blocks.data_ptr()) == token_file
    # without a folder, the token file lives next to the datasets cache and is reused on a cache hit
    again, _ = prepare_files(corpus_files, block_size=4)
    cached = again.token_files["train"]
    assert cached.parent == Path(again.streams["train"].cache_files[0]["filename"]).parent
    mtime = cached.stat().st_mtime_ns
    third, _ = prepare_files(corpus_files, block_size=4)
    assert third.token_files["train"] == cached and cached.stat().st_mtime_ns == mtime
    assert torch.equal(third.stream_tensor("train"), reference)
