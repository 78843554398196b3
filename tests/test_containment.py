"""Issue 22 ("nothing outside the folder, nothing half-written"), one test per reproduced failure.

Every path hwlm deletes or writes stays inside its output folder whatever the folder holds (crafted markers,
links, a downloaded marker); a file the user saves is never recorded as hwlm's; hwlm-push uploads no
run-internal marker. Each test fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _toy import lstm_flags, prepare_toy, train_main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_toy(tmp_path_factory.mktemp("toy"))


def own_folder(tmp_path: Path, written: list) -> Path:
    """A folder with a marker hwlm wrote there (trusted), whose list is then edited to ``written``."""
    from hwlm.output_folders import record_written

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    record_written(out, "hwlm_run.json", ["config.json"])
    record = json.loads((out / "hwlm_run.json").read_text())
    record["written"] = written
    (out / "hwlm_run.json").write_text(json.dumps(record))
    return out


def victims(tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "outside"
    (outside / "linked").mkdir(parents=True)
    files = {"victim": outside / "victim", "abs": outside / "abs", "through_link": outside / "linked" / "file"}
    for f in files.values():
        f.write_text("precious")
    return files


# ------------------------------------------------------------------ 1. --overwrite_output_dir stays inside


def test_clear_written_refuses_entries_outside_the_folder_and_deletes_nothing(tmp_path):
    from hwlm.output_folders import OutputDirError, clear_written

    files = victims(tmp_path)
    out = tmp_path / "run"
    for entry in ("../outside/victim", str(files["abs"]), "linkdir/file"):
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out = own_folder(tmp_path, ["config.json", entry, "hwlm_run.json"])
        (out / "linkdir").symlink_to(tmp_path / "outside" / "linked")
        with pytest.raises(OutputDirError, match=r"does not name a file inside the folder"):
            clear_written(out, "hwlm_run.json")
        assert all(f.read_text() == "precious" for f in files.values())
        assert (out / "config.json").exists()  # checked before the first removal: nothing removed


def test_overwrite_output_dir_with_a_crafted_marker_is_a_clear_error(prepared, tmp_path):
    files = victims(tmp_path)
    out = own_folder(tmp_path, ["config.json", "../outside/victim", "hwlm_run.json"])
    with pytest.raises(ValueError, match=r"'\.\./outside/victim' in hwlm's record does not name a file inside"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--overwrite_output_dir"))
    assert files["victim"].read_text() == "precious"


def test_a_link_in_the_written_list_is_removed_as_a_link(tmp_path):
    from hwlm.output_folders import clear_written

    files = victims(tmp_path)
    out = own_folder(tmp_path, ["config.json", "checkpoints", "hwlm_run.json"])
    (out / "checkpoints").symlink_to(tmp_path / "outside" / "linked")
    clear_written(out, "hwlm_run.json")
    assert not (out / "checkpoints").is_symlink() and files["through_link"].read_text() == "precious"


def test_a_downloaded_marker_is_never_trusted_for_deletion(prepared, tmp_path):
    """A marker that comes with a copied or downloaded folder (another inode) deletes nothing."""
    import shutil

    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no"))
    copy = tmp_path / "downloaded"
    shutil.copytree(out, copy)
    before = sorted(p.name for p in copy.iterdir())
    with pytest.raises(ValueError, match=r"was not written in this folder .* will not delete what it lists"):
        train_main(lstm_flags(prepared, copy, "--max_train_steps", "1", "--overwrite_output_dir"))
    assert sorted(p.name for p in copy.iterdir()) == before


# ------------------------------------------------------------------ 2. the user's files are not hwlm's


def test_a_file_saved_during_a_run_is_not_recorded_as_hwlms(tmp_path):
    from hwlm.output_folders import clear_written, record_written, tracked_writes
    from hwlm.training.session import owned_by_train

    out = tmp_path / "run"
    out.mkdir()
    record_written(out, "hwlm_run.json", [])
    with tracked_writes(out, "hwlm_run.json", owned_by_train):
        (out / "config.json").write_text("{}")  # hwlm's
        (out / "modeling_recurrent.py").write_text("# hwlm's model code")
        (out / "notes.txt").write_text("the user's, saved while the run goes")
        (out / "best_model-before-branch1").mkdir()
    written = json.loads((out / "hwlm_run.json").read_text())["written"]
    assert {"config.json", "modeling_recurrent.py", "best_model-before-branch1"} <= set(written)
    assert "notes.txt" not in written
    clear_written(out, "hwlm_run.json")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_file_changed_since_hwlm_wrote_it_is_neither_deleted_nor_replaced(tmp_path):
    from hwlm.output_folders import OutputDirError, clear_written, record_written

    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("hwlm's card")
    (out / "all_results.json").write_text("{}")
    record_written(out, "hwlm_run.json", ["README.md", "all_results.json"], hash_files=True)
    (out / "README.md").write_text("the user's edits")
    with pytest.raises(OutputDirError, match=r"README.md in .* changed since hwlm wrote it \(the SHA-256 differs"):
        clear_written(out, "hwlm_run.json")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "all_results.json", "hwlm_run.json"]
    assert (out / "README.md").read_text() == "the user's edits"
    (out / "README.md").unlink()
    assert clear_written(out, "hwlm_run.json") == ["all_results.json", "hwlm_run.json"]


def test_a_card_refreshed_by_hwlm_eval_stays_hwlms(prepared, tmp_path):
    """hwlm-eval --update_model_card rewrites README.md: the marker's hash follows, so the next
    --overwrite_output_dir still removes it."""
    from hwlm.hub import refresh_model_card

    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no"))
    refresh_model_card(out, {"test_perplexity": 1.5})
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no",
                          "--overwrite_output_dir"))


# ------------------------------------------------------------------ 3. the lock and the markers are not followed


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(prepared, tmp_path):
    from hwlm.output_folders import LOCK_NAME, OutputDirError, OutputLock

    target = tmp_path / "victim.txt"
    target.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    with pytest.raises(OutputDirError, match=r"\.hwlm\.lock' is a symbolic link"):
        OutputLock(out, "test").acquire()
    with pytest.raises(ValueError, match=r"\.hwlm\.lock' in --output_dir is a symbolic link"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "1"))
    from hwlm.cli.train_tokenizer import run as tokenizer_main

    corpus = tmp_path / "train.txt"
    corpus.write_text("".join(f"w{i} w{i + 1}\n" for i in range(40)))
    with pytest.raises(ValueError, match=r"is a symbolic link"):
        tokenizer_main(["--train_file", str(corpus), "--output_dir", str(out)])
    assert target.read_text() == "precious"


def test_a_link_inside_the_run_folder_is_refused_before_writing(prepared, tmp_path):
    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1"))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (out / "checkpoints" / ".tmp-step_00000002").symlink_to(target)
    with pytest.raises(ValueError, match=r"\.tmp-step_00000002' in --output_dir is a symbolic link"):
        train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "1",
                              "--resume_from_checkpoint", "latest"))
    assert list(target.iterdir()) == []


def test_marker_written_through_a_fresh_file_not_a_planted_link(tmp_path):
    from hwlm.output_folders import record_written

    target = tmp_path / "victim.txt"
    target.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".hwlm_run.json.tmp").symlink_to(target)  # the old fixed temporary name
    record_written(out, "hwlm_run.json", [])
    assert target.read_text() == "precious" and (out / "hwlm_run.json").is_file()


# ------------------------------------------------------------------ 1. hwlm-push uploads no run-internal marker


def test_push_does_not_upload_run_internal_markers(tmp_path):
    from hub_server import push_folder

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "README.md", "hwlm_run.json", "metrics-before-branch1.jsonl"):
        (folder / name).write_text("{}")
    proc, server = push_folder(folder)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert set(server.files) == {"config.json", "model.safetensors", "README.md"}
    finally:
        server.shutdown()


# ------------------------------------------------------------------ 4. preparation is atomic


def prepare_main(argv):
    from hwlm.cli.prepare import run

    return run(argv)


@pytest.fixture()
def two_corpora(tmp_path) -> tuple[list[str], list[str]]:
    """Flags of two corpora of the same words (one tokenizer fits both) but different text and sizes."""
    from _toy import write_toy_corpus

    a = write_toy_corpus(tmp_path / "a", n_train=150)
    b = write_toy_corpus(tmp_path / "b", n_train=60)
    Path(b["train_file"]).write_text("\n".join(reversed(Path(b["train_file"]).read_text().splitlines())) + "\n")
    flags = lambda f: [x for k, v in f.items() for x in (f"--{k}", v)] + ["--block_size", "16"]  # noqa: E731
    return flags(a), flags(b)


def prepared_state(out: Path) -> tuple[dict, int]:
    from hwlm.data import load_prepared

    data = load_prepared(out)
    return data.stats["train"], len(data.stream_tensor("train")), len(data.streams["train"])


def test_an_interrupted_re_prepare_leaves_the_old_folder_whole(two_corpora, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    a, b = two_corpora
    out = tmp_path / "prep"
    prepare_main([*a, "--output_dir", str(out)])
    before = prepared_state(out)
    tokenizer = ["--tokenizer_name", str(out / "tokenizer")]
    (out / "notes.txt").write_text("mine")
    calls = []

    def interrupt(self, *args, **kwargs):  # Ctrl-C once streams/, blocks/ and tokens/ of the new corpus are written
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_main([*b, *tokenizer, "--output_dir", str(out)])
    assert calls and prepared_state(out) == before  # counts and token file still describe the old corpus
    assert before[1:] == (before[0]["tokens"], before[0]["lines"])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".prep")) == []  # no staging left
    assert (out / "notes.txt").read_text() == "mine"
    monkeypatch.undo()
    prepare_main([*b, *tokenizer, "--output_dir", str(out)])
    after = prepared_state(out)
    assert after != before and after[1:] == (after[0]["tokens"], after[0]["lines"])
    assert (out / "notes.txt").read_text() == "mine"  # the user's file travels into the new folder


def test_a_disk_full_re_prepare_is_one_line_and_keeps_the_folder(two_corpora, tmp_path, monkeypatch):
    import errno

    import numpy as np

    a, b = two_corpora
    out = tmp_path / "prep"
    prepare_main([*a, "--output_dir", str(out)])
    before = prepared_state(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", full)  # the token file's first write
    monkeypatch.setattr("shutil.copyfile", full)
    with pytest.raises(ValueError, match=r"no space left on the device while writing .*the folder is unchanged"):
        prepare_main([*b, "--tokenizer_name", str(out / "tokenizer"), "--output_dir", str(out)])
    monkeypatch.undo()
    assert prepared_state(out) == before


def test_a_killed_fresh_prepare_is_cleaned_by_the_next_run(two_corpora, tmp_path):
    from hwlm.output_folders import STAGING_FLAG, staging_paths

    a, _ = two_corpora
    out = tmp_path / "prep"
    stage, _ = staging_paths(out)
    (stage / "streams").mkdir(parents=True)  # what a kill -9 in the middle of a fresh prepare leaves
    (stage / STAGING_FLAG).write_text("hwlm-prepare")
    assert not out.exists()  # and no half-written folder at the path training would read
    prepare_main([*a, "--output_dir", str(out)])
    assert not stage.exists() and prepared_state(out)[0]["tokens"] > 0


def test_a_staged_swap_cut_between_its_renames_is_finished_by_the_next_run(tmp_path):
    from hwlm.output_folders import COMPLETE_FLAG, REPLACED_FLAG, STAGING_FLAG, recover_staged, staging_paths

    out = tmp_path / "prep"
    stage, previous = staging_paths(out)
    for folder, flags, content in ((stage, (STAGING_FLAG, COMPLETE_FLAG), "new"), (previous, (REPLACED_FLAG,), "old")):
        folder.mkdir()
        (folder / "hwlm_data.json").write_text(content)
        for flag in flags:
            (folder / flag).write_text("x")
    recover_staged(out, ["hwlm_data.json"])
    assert (out / "hwlm_data.json").read_text() == "new" and not stage.exists() and not previous.exists()


def test_a_prepared_folder_whose_tokens_disagree_with_its_record_is_refused(two_corpora, tmp_path):
    """What an older hwlm's interrupted re-prepare left: hwlm_data.json of one corpus over tokens of another."""
    import shutil

    a, b = two_corpora
    prepare_main([*a, "--output_dir", str(tmp_path / "pa")])
    prepare_main([*b, "--tokenizer_name", str(tmp_path / "pa" / "tokenizer"), "--output_dir", str(tmp_path / "pb")])
    shutil.copyfile(tmp_path / "pb" / "tokens" / "train.npy", tmp_path / "pa" / "tokens" / "train.npy")
    from hwlm.data import load_prepared

    with pytest.raises(ValueError, match=r"inconsistent: hwlm_data.json records \d+ train tokens but tokens/train.npy "
                                         r"holds \d+ .* Run hwlm-prepare"):
        load_prepared(tmp_path / "pa")
    with open(tmp_path / "pb" / "tokens" / "train.npy", "r+b") as fh:  # a truncated file (a full disk)
        fh.truncate(200)
    with pytest.raises(ValueError, match=r"holds an unreadable file"):
        load_prepared(tmp_path / "pb")


# ------------------------------------------------------------------ 5. resume checks the data


def test_resume_refuses_a_prepared_folder_re_prepared_from_other_text(two_corpora, tmp_path):
    a, b = two_corpora
    data = tmp_path / "prep"
    prepare_main([*a, "--output_dir", str(data)])
    out = tmp_path / "run"
    flags = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    train_main(lstm_flags(data, out, *flags, "--stop_after_steps", "2"))
    saved = json.loads((out / "checkpoints" / "step_00000002" / "hwlm_state.json").read_text())
    before = saved["settings"]["data_fingerprint"]
    # the same tokenizer (same vocabulary size): before the fix this resumed silently on the other text
    prepare_main([*b, "--tokenizer_name", str(data / "tokenizer"), "--output_dir", str(data)])
    with pytest.raises(ValueError, match=rf"the training data changed since that checkpoint \(data fingerprint "
                                         rf"{before} then, [0-9a-f]{{16}} now, for --prepared_data_dir "):
        train_main(lstm_flags(data, out, *flags, "--resume_from_checkpoint", "latest"))
    prepare_main([*a, "--tokenizer_name", str(data / "tokenizer"), "--output_dir", str(data)])  # the same text again
    assert train_main(lstm_flags(data, out, *flags, "--resume_from_checkpoint", "latest"))["train_steps"] == 4


def test_resume_refuses_a_train_file_whose_text_changed(tmp_path):
    from _toy import TINY_LSTM, write_toy_corpus

    files = write_toy_corpus(tmp_path / "text")
    out = tmp_path / "run"
    flags = [*[x for k, v in files.items() for x in (f"--{k}", v)], "--output_dir", str(out), "--model_type",
             "hwlm_lstm", "--config_overrides", TINY_LSTM, "--batching", "streams", "--bptt", "8",
             "--per_device_train_batch_size", "4", "--max_train_steps", "4", "--checkpointing_steps", "2",
             "--disable_tqdm"]
    train_main([*flags, "--stop_after_steps", "2"])
    train = Path(files["train_file"])
    train.write_text("\n".join(reversed(train.read_text().splitlines())) + "\n")  # same words, other order
    with pytest.raises(ValueError, match=r"the training data changed since that checkpoint .* for --train_file "):
        train_main([*flags, "--resume_from_checkpoint", "latest"])


# ------------------------------------------------------------------ 6. sizes checked before allocation


@pytest.mark.parametrize("override,match", [
    ("num_hidden_layers=1000000", r"would have [\d,]+ parameters \(.*num_hidden_layers=1000000.*\): about [\d,.]+ GiB "
                                  r"to train it, but [\d,.]+ GiB of memory is available"),
    ("hidden_size=1000000000", r"sizes \(.*hidden_size=1000000000.*\) are too large to build"),
])
def test_a_config_too_large_for_memory_is_refused_before_allocation(prepared, tmp_path, override, match):
    from _toy import TINY_LSTM

    with pytest.raises(ValueError, match=match):
        train_main(lstm_flags(prepared, tmp_path / "run", "--config_overrides", f"{TINY_LSTM},{override}"))
    assert not (tmp_path / "run").exists()


def test_parameter_estimate_matches_the_built_model():
    from transformers import AutoConfig

    import hwlm  # noqa: F401
    from hwlm.model_building import skeleton_model
    from hwlm.model_sizes import check_model_size, estimate_parameters

    for model_type, sizes in (("hwlm_lstm", {"hidden_size": 16, "embedding_size": 8}), ("hwlm_rnn", {"hidden_size": 8}),
                              ("hwlm_transformer", {"hidden_size": 16, "num_attention_heads": 2,
                                                    "intermediate_size": 32})):
        config = AutoConfig.for_model(model_type, vocab_size=100, num_hidden_layers=5, **sizes)
        assert estimate_parameters(config) == sum(p.numel() for p in skeleton_model(config).parameters())
    with pytest.raises(ValueError, match=r"to train it, but 0.0 GiB of memory is available"):
        check_model_size(config, available=1000)


def test_a_huge_tokenizer_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    """A tokenizer's size reaches the model only once the data is loaded: checked then, before allocation."""
    import hwlm.model_sizes as sizes

    text = tmp_path / "text"
    text.mkdir()
    for split in ("train", "valid", "test"):  # 30,000 distinct words: 3x the config's default vocab_size
        (text / f"{split}.txt").write_text("".join(f"x{i} x{i + 1} x{i + 2}\n" for i in range(0, 30000, 3)))
    flags = ["--train_file", str(text / "train.txt"), "--validation_file", str(text / "valid.txt"),
             "--test_file", str(text / "test.txt"), "--block_size", "16"]
    prepare_main([*flags, "--output_dir", str(tmp_path / "prep")])
    # between what the default vocabulary needs (checked with the settings) and what this tokenizer needs
    monkeypatch.setattr(sizes, "available_memory", lambda: 12 * 2**20)
    with pytest.raises(ValueError, match=r"would have [\d,]+ parameters \(vocab_size=300\d\d,.* GiB to train it"):
        train_main(lstm_flags(tmp_path / "prep", tmp_path / "run", "--config_overrides",
                              "embedding_size=16,hidden_size=16,num_hidden_layers=1"))


def test_plateau_schedule_stops_at_min_lr_and_resumes_there():
    import torch
    from torch import nn

    from hwlm.training.optim import PlateauScheduler

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0)
    sched = PlateauScheduler(opt, factor=4.0, min_lr=1e-3)
    for loss in [5.0] + [6.0] * 300:  # never improves again: before the fix the rate reached 1e-169
        sched.on_evaluate(loss)
    assert sched.get_last_lr() == [1e-3]
    other = PlateauScheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=20.0), factor=4.0, min_lr=1e-3)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr() == [1e-3]


def test_min_lr_is_checked_with_the_settings():
    from hwlm.training.arguments import TrainingArguments

    assert TrainingArguments().min_lr > 0  # a floor by default
    with pytest.raises(ValueError, match=r"--min_lr 50.0 is above --learning_rate 20.0"):
        TrainingArguments(min_lr=50.0)
    with pytest.raises(ValueError, match=r"--min_lr must be a number >= 0"):
        TrainingArguments(min_lr=-1.0)


# ------------------------------------------------------------------ 6. bad inputs are one-line errors


def test_nul_bytes_in_the_text_are_refused_naming_the_line(tmp_path):
    from _toy import write_toy_corpus

    from hwlm.data import DataArguments, load_corpus

    files = write_toy_corpus(tmp_path)
    lines = Path(files["train_file"]).read_text().splitlines()
    lines[6] = lines[6].replace(" ", " w1\x00w2 ", 1)  # before the fix: "w1\x00w2" became one word
    Path(files["train_file"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"split 'train': row 7 \(line 7 of a text file\) holds a NUL byte"):
        load_corpus(DataArguments(**files))


def test_a_text_column_of_integers_is_refused(tmp_path):
    from datasets import Dataset

    from hwlm.data import DataArguments, load_corpus

    flags = {}
    for split, flag in (("train", "train_file"), ("valid", "validation_file")):
        Dataset.from_dict({"text": list(range(10))}).to_parquet(tmp_path / f"{split}.parquet")
        flags[flag] = str(tmp_path / f"{split}.parquet")
    with pytest.raises(ValueError, match=r"column 'text' holds int64, not text; pass --text_column"):
        load_corpus(DataArguments(**flags))


def gadget_folder(tmp_path: Path, **sizes) -> Path:
    """A model folder whose weights are a pickle that runs a command when unpickled."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401

    folder = tmp_path / "model"
    config = AutoConfig.for_model("hwlm_lstm", vocab_size=50, hidden_size=8, embedding_size=8, num_hidden_layers=1)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    (folder / "model.safetensors").unlink()

    class Gadget:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"lm_head.weight": Gadget()}, folder / "pytorch_model.bin")
    if sizes:
        record = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**record, **sizes}))
    return folder


def test_eval_refuses_a_pickle_gadget_in_one_line(tmp_path):
    from hwlm.safe_load import load_causal_lm

    import shutil

    from hwlm.cli.evaluate import run as eval_main

    folder = gadget_folder(tmp_path)
    with pytest.raises(ValueError, match=r"pytorch_model.bin holds objects other than tensors, so loading it would run"):
        load_causal_lm(str(folder))
    for f in (REPO / "tokenizer").glob("tokenizer*.json"):
        shutil.copy(f, folder / f.name)
    with pytest.raises(ValueError, match=r"pytorch_model.bin holds objects other than tensors"):  # before: a traceback
        eval_main(["--model_name_or_path", str(folder)])
    assert not (tmp_path / "pwned").exists()


def test_a_model_folder_with_absurd_sizes_is_refused_before_loading(tmp_path):
    from hwlm.safe_load import load_causal_lm

    folder = gadget_folder(tmp_path, hidden_size=10**9)
    with pytest.raises(ValueError, match=r"are too large to build"):
        load_causal_lm(str(folder))


# ------------------------------------------------------------------ 5. several machines need one shared folder


class _UnsharedMachine:
    """The main process of a 2-process run whose other rank writes into its own machine's copy of the folder:
    only rank 0's files appear here."""

    num_processes, process_index, is_main_process = 2, 0, True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "random_states_0.pkl").write_bytes(b"rng")
        (Path(folder) / "model.safetensors").write_bytes(b"w")


def test_an_unshared_output_folder_is_refused_at_the_first_checkpoint(tmp_path):
    from hwlm.training.checkpoint import CheckpointError, list_checkpoints, save_checkpoint

    with pytest.raises(CheckpointError, match=r"files of rank\(s\) \[1\] are not in .* not one folder shared by every"):
        save_checkpoint(_UnsharedMachine(), tmp_path, step=2, meta={}, keep_last=3)
    assert list_checkpoints(tmp_path) == [] and list((tmp_path / "checkpoints").iterdir()) == []  # no .tmp-step_* left


def test_resume_refuses_a_checkpoint_without_every_ranks_files(prepared, tmp_path):
    """What an unshared folder left before the fix: rank 1's state silently restarted on resume."""
    from hwlm.training.checkpoint import MANIFEST_NAME, STATE_NAME

    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "1"))
    ckpt = out / "checkpoints" / "step_00000002"
    state = json.loads((ckpt / STATE_NAME).read_text())
    state["settings"]["num_processes"] = 2
    (ckpt / STATE_NAME).write_text(json.dumps(state))
    manifest = json.loads((ckpt / MANIFEST_NAME).read_text())
    manifest["files"][STATE_NAME] = (ckpt / STATE_NAME).stat().st_size
    (ckpt / MANIFEST_NAME).write_text(json.dumps(manifest))
    from hwlm.training.checkpoint import CheckpointError, resolve_checkpoint

    # what every rank of a 2-process resume runs before the Accelerator exists (so all refuse alike)
    with pytest.raises(CheckpointError, match=r"of a 2-process run lacks the files of rank\(s\) \[1\]"):
        resolve_checkpoint("latest", out, deep=True)


def test_refreshing_a_card_never_writes_through_a_link(prepared, tmp_path):
    from hwlm.hub import refresh_model_card

    out = tmp_path / "run"
    train_main(lstm_flags(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "no"))
    target = tmp_path / "victim.md"
    target.write_text("precious")
    (out / "README.md").unlink()
    (out / "README.md").symlink_to(target)
    with pytest.raises(ValueError, match=r"README.md' in --output_dir is a symbolic link"):
        refresh_model_card(out, {"test_perplexity": 1.5})
    assert target.read_text() == "precious"


def test_ddp_timeout_is_checked_and_changes_nothing_a_resume_replays():
    from hwlm.training.arguments import TrainingArguments
    from hwlm.training.run import MUTABLE_WITHOUT_EFFECT

    with pytest.raises(ValueError, match=r"--ddp_timeout must be"):
        TrainingArguments(ddp_timeout=0)
    assert "ddp_timeout" in MUTABLE_WITHOUT_EFFECT  # changing it on resume does not set best_model aside
