"""hwlm-prepare counts and encodes the train split from one pass over its text (`CountingEncoder`); the tokenizer
and the ids must be exactly those of the two-pass path (`train_word_tokenizer` + `ArrowLineEncoder`)."""

import random

import numpy as np
import pyarrow as pa
import pytest
from datasets import Dataset

from hwlm.data import ArrowLineEncoder, CountingEncoder, count_and_encode, prepare_datasets
from hwlm.tokenization import PRETOKENIZED_SETTINGS, tokenizer_fingerprint, train_word_tokenizer


def toy_lines(n=600, seed=0):
    rng = random.Random(seed)
    words = [f"w{int(rng.paretovariate(1.2))}" for _ in range(n * 8)] + ["Dr.", "U.S.", "1,000", "don't", "--"]
    lines = [" " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) + " " for _ in range(n)]
    # the awkward cases: empty and blank lines, special tokens inside chunks, whitespace only Arrow splits on,
    # Unicode the NFKC normalizer changes, a word the cap or min_frequency drops
    return lines + ["", "   ", "<unk> x<eos>y <pad>", "a \x1c b <unk>", "ﬁne Ｗide", "rare-once"]


SETTINGS = [
    PRETOKENIZED_SETTINGS,
    {**PRETOKENIZED_SETTINGS, "pre_tokenizer": "words", "lowercase": True, "nfkc": True, "min_frequency": 2,
     "vocab_size": 40},
    {**PRETOKENIZED_SETTINGS, "pre_tokenizer": "treebank", "min_frequency": 2},
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["whitespace", "words-lower-nfkc-cap", "treebank"])
@pytest.mark.parametrize("batch", [7, 100_000])
def test_one_pass_equals_counting_then_encoding(settings, batch):
    lines = pa.array(toy_lines(), pa.large_string())
    reference = train_word_tokenizer([lines], **settings)
    expected = ArrowLineEncoder(reference).encode(lines)
    counter = CountingEncoder(settings)
    for start in range(0, len(lines), batch):
        counter.add(lines.slice(start, batch))
    tokenizer = counter.tokenizer()
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(reference)
    got = counter.encode(tokenizer).combine_chunks()
    assert got.equals(expected)
    # and both equal the tokenizers library's own encoding, line by line, plus <eos>
    eos = tokenizer.eos_token_id
    backend = tokenizer.backend_tokenizer.encode_batch(lines.to_pylist(), add_special_tokens=False)
    assert got.to_pylist() == [e.ids + [eos] for e in backend]


def test_prepare_with_the_one_pass_ids_equals_prepare_with_the_map():
    corpus = {s: Dataset.from_dict({"text": toy_lines(200, seed=i)}) for i, s in enumerate(("train", "validation", "test"))}
    tokenizer, train_ids = count_and_encode(corpus["train"], PRETOKENIZED_SETTINGS)
    from datasets import DatasetDict

    corpus = DatasetDict(corpus)
    mapped = prepare_datasets(corpus, tokenizer, block_size=8)
    one_pass = prepare_datasets(corpus, tokenizer, block_size=8, encoded={"train": train_ids})
    assert one_pass.stats == mapped.stats
    for split in corpus:
        assert np.array_equal(one_pass.stream_tensor(split).numpy(), mapped.stream_tensor(split).numpy())
        assert one_pass.blocks[split]["input_ids"] == mapped.blocks[split]["input_ids"]
    with pytest.raises(ValueError, match="encoded\\['train'\\] has 3 rows"):
        prepare_datasets(corpus, tokenizer, block_size=8, encoded={"train": train_ids.slice(0, 3)})
