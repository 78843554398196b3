"""The word-level tokenizer: components, special tokens, caps, Unicode whitespace, save/load, fingerprint."""

import io
import json
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer, TokenizersBackend

from hwlm.tokenization import (
    SPECIAL_TOKENS,
    build_word_tokenizer,
    detokenize_wikitext,
    load_tokenizer,
    tokenizer_fingerprint,
    unk_token_id,
    train_word_tokenizer,
    treebank_words,
)

LINES = [
    "the cat sat on the mat",
    "the dog sat",
    "",
    "a cat , a dog .",
]


def ids_of(tok, text):
    return tok(text)["input_ids"]


def test_special_tokens_come_first_and_words_follow_by_frequency():
    tok = train_word_tokenizer(LINES)
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2]
    # <unk> is an ordinary entry, not a named special token: decoding with skip_special_tokens=True keeps it.
    assert (tok.unk_token, tok.eos_token, tok.pad_token) == (None, "<eos>", "<pad>")
    assert (unk_token_id(tok), tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert tok.decode(ids_of(tok, "the zebra <unk> sat <eos>"), skip_special_tokens=True).split() == ["the", "<unk>", "<unk>", "sat"]
    assert vocab["the"] == 3  # most frequent word (3 times)
    assert sorted(vocab.values()) == list(range(len(vocab)))  # no holes
    words = {w for line in LINES for w in line.split()}
    assert set(vocab) == words | set(SPECIAL_TOKENS)


@pytest.mark.parametrize("pre_tokenizer", ["whitespace", "words"])
def test_corpus_unk_is_the_unknown_token_not_a_second_entry(pre_tokenizer):
    # PTB and WikiText contain "<unk>" (and a corpus may even contain "<eos>") as words.
    lines = ["a <unk> b <unk>", "<unk> <eos> c", "a a"]
    tok = train_word_tokenizer(lines, pre_tokenizer=pre_tokenizer)
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert set(vocab) == {"a", "b", "c"} | set(SPECIAL_TOKENS)
    assert ids_of(tok, "a <unk> zebra") == [vocab["a"], 0, 0]


def test_vocab_size_counts_special_tokens_and_keeps_most_frequent():
    lines = ["x x x x y y y z z w", "<unk> <unk> <unk> <unk> <unk>"]
    tok = train_word_tokenizer(lines, vocab_size=5)
    assert len(tok) == 5
    assert set(tok.get_vocab()) == {"x", "y"} | set(SPECIAL_TOKENS)
    assert ids_of(tok, "z w") == [0, 0]


def test_min_frequency_drops_rare_words():
    tok = train_word_tokenizer(["x x y"], min_frequency=2)
    assert set(tok.get_vocab()) == {"x"} | set(SPECIAL_TOKENS)


def test_vocab_size_smaller_than_special_tokens_is_an_error():
    with pytest.raises(ValueError, match=r"vocab_size=3 is smaller than the 3 special tokens.*--vocab_size 4"):
        train_word_tokenizer(LINES, vocab_size=3)


def test_bad_settings_and_empty_text_are_errors():
    with pytest.raises(ValueError, match="min_frequency=0 must be >= 1"):
        train_word_tokenizer(LINES, min_frequency=0)
    with pytest.raises(ValueError, match="pre_tokenizer='bpe' is not supported"):
        train_word_tokenizer(LINES, pre_tokenizer="bpe")
    with pytest.raises(ValueError, match="has no words"):
        train_word_tokenizer(["", "   ", "\t"])
    with pytest.raises(ValueError, match="has no words.*min_frequency=5"):
        train_word_tokenizer(["a b c"], min_frequency=5)


def test_pre_tokenizers_whitespace_keeps_punctuation_words_splits_it():
    text = "hello, world. it's"
    ws = train_word_tokenizer([text], pre_tokenizer="whitespace")
    words = train_word_tokenizer([text], pre_tokenizer="words")
    assert ws.convert_ids_to_tokens(ids_of(ws, text)) == ["hello,", "world.", "it's"]
    assert words.convert_ids_to_tokens(ids_of(words, text)) == ["hello", ",", "world", ".", "it", "'", "s"]


def test_lowercase_and_nfkc_normalizers():
    tok = train_word_tokenizer(["The the THE \ufb01ne ＡＢ"], lowercase=True, nfkc=True)
    assert set(tok.get_vocab()) == {"the", "fine", "ab"} | set(SPECIAL_TOKENS)
    assert ids_of(tok, "THE Fine") == [tok.convert_tokens_to_ids("the"), tok.convert_tokens_to_ids("fine")]
    plain = train_word_tokenizer(["The the"])
    assert set(plain.get_vocab()) == {"The", "the"} | set(SPECIAL_TOKENS)


@pytest.mark.parametrize("pre_tokenizer", ["whitespace", "words"])
def test_unicode_whitespace_behaves_like_a_space(pre_tokenizer):
    tok = train_word_tokenizer(["a b c d e f"], pre_tokenizer=pre_tokenizer)
    odd = "a\tb\u00a0c\u3000d\u2009e\r\nf\u2028"
    assert ids_of(tok, odd) == ids_of(tok, "a b c d e f")


def test_decode_joins_words_with_single_spaces_and_encode_adds_no_eos():
    tok = train_word_tokenizer(["a b c , . <eos>"])
    ids = ids_of(tok, "a b c")
    assert ids == [tok.convert_tokens_to_ids(w) for w in "a b c".split()]  # no <eos> appended
    # every word carries its leading space, so a decoded continuation appends to a prompt as is
    assert tok.decode(ids) == " a b c"
    assert "the" + tok.decode(ids) == "the a b c"
    assert tok.decode(ids_of(tok, "a , b .")) == " a , b ."  # no clean-up gluing punctuation
    assert tok.decode(ids + [tok.eos_token_id]) == " a b c <eos>"
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == " a b c"


def test_save_pretrained_and_autotokenizer_round_trip(tmp_path):
    tok = train_word_tokenizer(LINES, lowercase=True, pre_tokenizer="words")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, TokenizersBackend)
    assert (loaded.unk_token, loaded.eos_token, loaded.pad_token) == (None, "<eos>", "<pad>")
    assert (unk_token_id(loaded), loaded.eos_token_id, loaded.pad_token_id) == (0, 1, 2)
    assert loaded.decode(ids_of(loaded, "the zebra"), skip_special_tokens=True) == " the <unk>"  # unknown words stay
    assert ids_of(loaded, "The Cat sat, on a zebra") == ids_of(tok, "The Cat sat, on a zebra")
    assert loaded.decode(ids_of(loaded, "the cat sat")) == " the cat sat"
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    # batch padding uses <pad>
    batch = loaded(["the cat", "the"], padding=True)["input_ids"]
    assert batch[1] == [loaded.convert_tokens_to_ids("the"), loaded.pad_token_id]


def test_fingerprint_tracks_what_decides_the_ids():
    base = train_word_tokenizer(LINES)
    assert tokenizer_fingerprint(base) == tokenizer_fingerprint(train_word_tokenizer(LINES))
    assert tokenizer_fingerprint(base) != tokenizer_fingerprint(train_word_tokenizer(LINES, lowercase=True))
    assert tokenizer_fingerprint(base) != tokenizer_fingerprint(train_word_tokenizer(LINES, pre_tokenizer="words"))
    assert tokenizer_fingerprint(base) != tokenizer_fingerprint(train_word_tokenizer(LINES + ["new words"]))
    base.backend_tokenizer.enable_truncation(8)  # runtime setting, not part of the vocabulary
    assert tokenizer_fingerprint(base) == tokenizer_fingerprint(train_word_tokenizer(LINES))
    assert len(tokenizer_fingerprint(base)) == 16


def test_training_streams_from_a_file_object_like_from_a_list(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        from_file = train_word_tokenizer(f)
    assert from_file.get_vocab() == train_word_tokenizer(io.StringIO("\n".join(LINES))).get_vocab()
    assert from_file.get_vocab() == train_word_tokenizer(LINES).get_vocab()


def test_build_word_tokenizer_components():
    raw = build_word_tokenizer(lowercase=True, nfkc=True, pre_tokenizer="words")
    state = json.loads(raw.to_str())
    assert [n["type"] for n in state["normalizer"]["normalizers"]] == ["NFKC", "Lowercase"]
    assert state["pre_tokenizer"]["type"] == "Whitespace"
    assert state["model"]["type"] == "WordLevel" and state["model"]["unk_token"] == "<unk>"
    assert state["decoder"]["type"] == "Replace"
    assert json.loads(build_word_tokenizer().to_str())["pre_tokenizer"]["type"] == "WhitespaceSplit"


def test_load_tokenizer_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="could not load tokenizer .*nowhere"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.* holds no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")


def test_committed_default_tokenizer_loads():
    from hwlm.data import REPO_TOKENIZER_DIR

    tok = load_tokenizer(REPO_TOKENIZER_DIR)
    assert (unk_token_id(tok), tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert tok.decode(ids_of(tok, "The assert statement")) == " the assert statement"
    record = json.loads((REPO_TOKENIZER_DIR / "hwlm_tokenizer.json").read_text())
    assert record["fingerprint"] == tokenizer_fingerprint(tok)
    assert record["vocab_size"] == len(tok)


def test_committed_default_tokenizer_is_what_hwlm_tokenizer_writes(tmp_path, datasets_cache):
    """Rebuild tokenizer/ from the embedded corpus; byte-identical when the corpus text is the recorded one."""
    from hwlm.cli.train_tokenizer import main
    from hwlm.data import REPO_TOKENIZER_DIR, embedded_corpus_info

    record = json.loads((REPO_TOKENIZER_DIR / "hwlm_tokenizer.json").read_text())["source"]
    info = embedded_corpus_info()
    if info["python_version"] != record["python_version"]:
        pytest.skip(
            f"tokenizer/ was built with Python {record['python_version']} (pydoc_data.topics sha256 "
            f"{record['sha256'][:12]}); this is Python {info['python_version']} (sha256 {info['sha256'][:12]}), "
            "whose embedded text and README differ. Rebuild with `hwlm-tokenizer --output_dir tokenizer` "
            "on the recorded version."
        )
    assert info["sha256"] == record["sha256"], "same Python version but different pydoc_data.topics text"
    main(["--output_dir", str(tmp_path / "tok")])
    committed = sorted(p.name for p in REPO_TOKENIZER_DIR.iterdir())
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == committed
    for name in committed:
        assert (tmp_path / "tok" / name).read_bytes() == (REPO_TOKENIZER_DIR / name).read_bytes(), name


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")
    return tmp_path / "hf_datasets_cache"


def test_python_version_is_recorded_in_readme():
    from hwlm.data import REPO_TOKENIZER_DIR

    readme = (REPO_TOKENIZER_DIR / "README.md").read_text()
    record = json.loads((REPO_TOKENIZER_DIR / "hwlm_tokenizer.json").read_text())["source"]
    assert f"Python version: {record['python_version']}" in readme
    assert "pydoc_data.topics" in readme


# ------------------------------------------------------------------------------ treebank pre-tokenizer

TREEBANK_CASES = [
    # contractions and possessives as WikiText writes them: the apostrophe starts a new word
    ("I wasn't there, O'Brien said.", ["I", "wasn", "'t", "there", ",", "O", "'Brien", "said", "."]),
    ("the nations' cease-fire", ["the", "nations", "'", "cease", "@-@", "fire"]),
    ("They're here; we'll see.", ["They", "'re", "here", ";", "we", "'ll", "see", "."]),
    # quotes after punctuation, runs of punctuation split one mark at a time
    ('He said "Nay!" and left.', ["He", "said", '"', "Nay", "!", '"', "and", "left", "."]),
    ("(HP) = = Gameplay = =", ["(", "HP", ")", "=", "=", "Gameplay", "=", "=", ]),
    ("What?!", ["What", "?", "!"]),
    # dashes and ellipses
    ("May 15 – 18, 1911 — over", ["May", "15", "–", "18", ",", "1911", "—", "over"]),
    ("wait... then -- go", ["wait", "...", "then", "--", "go"]),
    # numbers: WikiText's markers for thousands and decimals; currency and percent split off
    ("$14,000.50 or 3.5%", ["$", "14", "@,@", "000", "@.@", "50", "or", "3", "@.@", "5", "%"]),
    ("the 1980s, MP3", ["the", "1980s", ",", "MP3"]),
    # abbreviations, initials, URLs and dotted names stay whole
    ("The U.S. Army, e.g. Dr. Smith", ["The", "U.S.", "Army", ",", "e.g.", "Dr.", "Smith"]),
    ("J. R. R. Tolkien at 5 p.m.", ["J.", "R.", "R.", "Tolkien", "at", "5", "p.m."]),
    ("see https://example.com/a?b=1.", ["see", "https://example.com/a?b=1", "."]),
    ("About.com and www.example.org", ["About.com", "and", "www.example.org"]),
    # non-Latin scripts, combining marks, Unicode punctuation and whitespace
    ("我爱你，世界。", ["我爱你", "，", "世界", "。"]),
    ("naïve café – Ελληνικά «quote»", ["naïve", "café", "–", "Ελληνικά", "«", "quote", "»"]),
    ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),
    ("a\u3000b\u00a0c\tsmart’s", ["a", "b", "c", "smart", "’s"]),
]


@pytest.mark.parametrize("text,expected", TREEBANK_CASES)
def test_treebank_pre_tokenizer_table(text, expected):
    assert treebank_words(text) == expected


def test_treebank_tokenizer_is_built_from_tokenizers_components(tmp_path):
    state = json.loads(build_word_tokenizer(pre_tokenizer="treebank").to_str())
    assert [n["type"] for n in state["normalizer"]["normalizers"]] == ["Replace"] * 3
    assert [p["type"] for p in state["pre_tokenizer"]["pretokenizers"]] == ["WhitespaceSplit", "Split"]
    tok = train_word_tokenizer(["I wasn't there, 1,000 times."], pre_tokenizer="treebank")
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)  # users load it like any other tokenizer
    assert loaded.convert_ids_to_tokens(loaded("wasn't 1,000")["input_ids"]) == ["wasn", "'t", "1", "@,@", "000"]


def test_detokenize_wikitext():
    line = ' The U.S. Army \'s " Nameless " unit ( HP ) cost $ 14 @,@ 000 @.@ 50 ; it wasn \'t well @-@ known . \n'
    assert detokenize_wikitext(line) == 'The U.S. Army\'s "Nameless" unit (HP) cost $14,000.50; it wasn\'t well-known.'
    assert treebank_words(detokenize_wikitext(line)) == line.split()


SHARED_DATA = Path(os.environ.get("HWLM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.shared_data
@pytest.mark.parametrize("split", ["valid.txt", "test.txt"])
def test_wikitext2_round_trip_agreement(split):
    """Detokenize WikiText-2 as written English, re-tokenize with ``treebank``: >= 95% of lines come back exactly.

    docs/tokenization.md reports the figures (train 98.18%, valid 97.89%, test 97.72% when written).
    """
    from hwlm.tokenization import round_trip_agreement

    path = SHARED_DATA / "wikitext-2" / split
    if not path.is_file():
        pytest.skip(f"{path} not present")
    lines, agreeing = round_trip_agreement(path.read_text(encoding="utf-8").splitlines())
    assert lines > 2400 and agreeing / lines >= 0.95


# ------------------------------------------------------------------------------ vectorized counting


def trainer_reference(texts, *, vocab_size=None, min_frequency=1, **settings):
    """The vocabulary as tokenizers' WordLevelTrainer builds it (the path hwlm used before counting with Arrow)."""
    from tokenizers import AddedToken, trainers

    tok = build_word_tokenizer(**settings)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    trainer = trainers.WordLevelTrainer(vocab_size=(vocab_size + 3) if vocab_size else 2**31 - 1,
                                        min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    words = [w for w, _ in sorted(tok.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
             if w not in SPECIAL_TOKENS]
    return words[: vocab_size - 3] if vocab_size else words


TIES = ["b a c a b c d e f g", "z y x <unk> <unk> x<unk>y <eos>", "  lead  and  trail  ", "", "É é Ǆ ǆ ﬁ ＡＢ 1,000.5 don't",
        "a\x1cb c\x1fd", "   \t  ", "x y z x y z q"]


@pytest.mark.parametrize("settings", [
    {}, {"vocab_size": 8}, {"vocab_size": 5}, {"min_frequency": 2}, {"lowercase": True, "nfkc": True},
    {"pre_tokenizer": "words"}, {"pre_tokenizer": "treebank"}, {"pre_tokenizer": "treebank", "lowercase": True},
])
def test_vectorized_vocabulary_equals_the_tokenizers_trainer(settings):
    for texts in (TIES, LINES, [line * 3 for line in TIES + LINES]):
        assert train_word_tokenizer(texts, **settings).get_vocab() == {
            t: i for i, t in enumerate(list(SPECIAL_TOKENS) + trainer_reference(texts, **settings))}


def test_arrow_and_rust_whitespace_differ_only_in_four_control_characters():
    """pyarrow's utf8_split_whitespace vs tokenizers' WhitespaceSplit, over every code point."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from tokenizers import pre_tokenizers

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    arrow = pc.list_value_length(pc.utf8_split_whitespace(pa.array(["a" + c + "b" for c in chars]))).to_numpy()
    arrow_ws = {c for c, n in zip(chars, arrow) if n == 2}
    text = "".join("a" + c + "b" for c in chars)  # one call: each splitting character separates "a" from "b"
    pieces = pre_tokenizers.WhitespaceSplit().pre_tokenize_str(text)
    rust_ws = {text[end] for _, (_, end) in pieces[:-1]}  # the character right after each piece split it off
    assert rust_ws <= arrow_ws
    assert sorted(arrow_ws - rust_ws) == ["\x1c", "\x1d", "\x1e", "\x1f"]


def test_the_ascii_split_is_exact_where_no_unusual_whitespace_is_found():
    """Every code point as a separator: `has_unusual_whitespace` flags exactly the characters where the ASCII split
    would differ from tokenizers' WhitespaceSplit, so `split_odd_whitespace` may take the faster split elsewhere."""
    import re

    import pyarrow as pa
    import pyarrow.compute as pc
    from tokenizers import pre_tokenizers

    from hwlm.tokenization import NON_ASCII_WHITESPACE, has_unusual_whitespace, split_whitespace

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    text = "".join("a" + c + "b" for c in chars)
    pieces = pre_tokenizers.WhitespaceSplit().pre_tokenize_str(text)
    rust_ws = {text[end] for _, (_, end) in pieces[:-1]}
    assert {c for c in chars if re.fullmatch(f"[{NON_ASCII_WHITESPACE}]", c)} == rust_ws - set(" \t\n\v\f\r")
    lines = pa.array(["a" + c + "b" for c in chars])
    flagged = pc.match_substring_regex(lines, f"[\x1c-\x1f{NON_ASCII_WHITESPACE}]").to_numpy(zero_copy_only=False)
    split_ascii = pc.list_value_length(split_whitespace(lines, ascii_only=True)).to_numpy() == 2
    plain = [(c, s) for c, s, f in zip(chars, split_ascii, flagged) if not f]
    assert len(plain) > 1_000_000 and all(s == (c in rust_ws) for c, s in plain)
    assert not has_unusual_whitespace(pa.array(["the cat\tsat\r\n", "é – ü"]))
    assert has_unusual_whitespace(pa.array(["the\u00a0cat"])) and has_unusual_whitespace(pa.array(["a\x1fb"]))
