"""Stream and block loaders (hwlm.batching): layout, sharding across processes, coverage, one batch interface."""

import pytest
import torch

import _toy  # noqa: F401  (one torch thread)
from hwlm.batching import BlockLoader, StreamLoader


def windows(loader):
    return [(w.input_ids.clone(), w.shift_labels.clone()) for w in loader]


def test_stream_layout_matches_the_batchify_diagram():
    tokens = torch.arange(21)  # 20 targets, 2 streams of 10
    loader = StreamLoader(tokens, batch_size=2, bptt=4)
    (x0, y0), (x1, y1), (x2, y2) = windows(loader)
    assert x0.tolist() == [[0, 1, 2, 3], [10, 11, 12, 13]]
    assert y0.tolist() == [[1, 2, 3, 4], [11, 12, 13, 14]]
    assert x1.tolist() == [[4, 5, 6, 7], [14, 15, 16, 17]]
    assert x2.tolist() == [[8, 9], [18, 19]] and y2.tolist() == [[9, 10], [19, 20]]


@pytest.mark.parametrize("variable", [False, True])
def test_two_ranks_get_contiguous_disjoint_streams_covering_the_corpus(variable):
    tokens = torch.arange(1000)
    loaders = [StreamLoader(tokens, batch_size=3, bptt=10, num_processes=2, process_index=r,
                            variable_length=variable, seed=5) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1])  # lock-step
    assert loaders[0].window_lengths() == loaders[1].window_lengths()
    seen = []
    for rank, loader in enumerate(loaders):
        rows = torch.cat([y for _, y in windows(loader)], dim=1)  # (B, L): each row one stream, read in order
        for b, row in enumerate(rows.tolist()):
            assert row == list(range(row[0], row[0] + len(row)))  # contiguous
            seen.extend(row)
        assert rows[0, 0] == 1 + rank * 3 * loader.stream_len  # rank r owns streams r*B ... r*B+B-1
    assert len(seen) == len(set(seen))  # no target twice in an epoch
    assert len(seen) == 6 * (999 // 6)  # everything but the < 6-token tail


def test_variable_windows_are_seeded_by_epoch_and_resumable():
    loader = StreamLoader(torch.arange(5000), batch_size=2, bptt=20, variable_length=True, seed=1)
    first = loader.window_lengths()
    assert len(set(first)) > 3 and min(first) >= 5 and max(first) <= 40 and sum(first) == loader.stream_len
    loader.set_epoch(1)
    assert loader.window_lengths() != first
    all_w = windows(loader)
    tail = [(w.input_ids, w.shift_labels) for w in loader.iter_windows(7)]
    assert all(torch.equal(a[1], b[1]) for a, b in zip(all_w[7:], tail))


def test_pad_to_full_scores_every_target_once():
    tokens = torch.arange(23)
    loader = StreamLoader(tokens, batch_size=4, bptt=3, pad_to_full=True, pad_token_id=-1)
    labels = torch.cat([y for _, y in windows(loader)], dim=1).flatten().tolist()
    assert sorted(t for t in labels if t != -100) == list(range(1, 23))


def test_block_loader_shards_and_shuffles_per_epoch():
    blocks = torch.arange(40).view(20, 2)
    ranks = [BlockLoader(blocks, batch_size=3, num_processes=2, process_index=r, seed=0) for r in range(2)]
    ids = [b.input_ids[:, 0].tolist() for r in ranks for b in r]
    flat = [i for batch in ids for i in batch]
    assert len(ranks[0]) == 3 and len(flat) == len(set(flat)) == 18
    ranks[0].set_epoch(1)
    assert [b.input_ids[:, 0].tolist() for b in ranks[0]] != ids[:3]
    with pytest.raises(ValueError, match="too few for one batch"):
        BlockLoader(blocks, batch_size=11, num_processes=2)


def test_both_regimes_offer_one_batch_interface():
    """The loop calls ``model(**batch.model_inputs(carried, device))`` and ``batch.carry(outputs)`` for either regime."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers the Auto classes)
    from _toy import TINY_LSTM, TINY_TRANSFORMER
    from hwlm.model_building import parse_config_overrides

    tokens = torch.arange(200) % 50
    lstm = AutoModelForCausalLM.from_config(AutoConfig.for_model("hwlm_lstm", vocab_size=50,
                                                                 **parse_config_overrides(TINY_LSTM)))
    streams = StreamLoader(tokens, batch_size=2, bptt=8)
    first, second = list(streams.iter_from(0))[:2]
    assert [w.index for w in streams.iter_from(3)][:1] == [3] and first.num_tokens == 16
    carried = first.carry(lstm(**first.model_inputs(None, "cpu")))
    state = [t for layer in range(len(carried)) for t in carried[layer]]  # (B, H) per tensor of each layer
    assert state and all(not t.requires_grad for t in state)  # detached: truncated BPTT
    inputs = second.model_inputs(carried, "cpu")
    assert inputs["cache"] is carried and inputs["use_cache"] is True
    assert lstm(**inputs).loss.requires_grad  # the next window trains from the carried (detached) state

    transformer = AutoModelForCausalLM.from_config(AutoConfig.for_model("hwlm_transformer", vocab_size=50,
                                                                        **parse_config_overrides(TINY_TRANSFORMER)))
    blocks = BlockLoader(tokens[:192].view(12, 16), batch_size=3, seed=0)
    batch = next(blocks.iter_from(2))
    assert batch.index == 2 and batch.num_tokens == 3 * 15  # each block's first token is not a target
    inputs = batch.model_inputs(None, "cpu")
    assert set(inputs) == {"input_ids", "labels"}
    assert batch.carry(transformer(**inputs)) is None  # blocks are independent: nothing is carried


@pytest.mark.parametrize("rank", [0, 1])
def test_training_streams_are_views_of_the_split_not_copies(rank, tmp_path):
    """A stream memory-mapped from a prepared folder stays one copy: the loader's rows point into it."""
    import numpy as np

    path = tmp_path / "tokens.npy"
    np.save(path, np.arange(1000, dtype=np.int64))
    tokens = torch.from_numpy(np.load(path, mmap_mode="c"))  # as PreparedData.stream_tensor maps a token file
    loader = StreamLoader(tokens, batch_size=3, bptt=10, num_processes=2, process_index=rank)
    assert loader.inputs.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()
    assert loader.labels.untyped_storage().data_ptr() == tokens.untyped_storage().data_ptr()
    copies = StreamLoader._padded_rows(tokens, rank * 3, 3, loader.stream_len, 0)  # what the loader used to hold
    assert torch.equal(loader.inputs, copies[0]) and torch.equal(loader.labels, copies[1])
