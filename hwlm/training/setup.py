"""Building a run: data, model, loader, optimiser, schedule and, on resume, the checkpoint's state.

Runs after `hwlm.training.arguments.check_settings` and once the Accelerator exists; returns one `Run`.
"""

from __future__ import annotations

import math
from pathlib import Path

from hwlm.batching import BlockLoader, StreamLoader
from hwlm.model_building import build_model, resolve_config
from hwlm.training.checkpoint import find_latest_checkpoint
from hwlm.training.optim import create_optimizer, create_scheduler
from hwlm.training.resume import check_data_fingerprint, data_fingerprint, resume_run
from hwlm.training.run import Run
from hwlm.model_sizes import check_model_size

__all__ = ["build_run", "load_training_data", "make_train_loader"]


def load_training_data(data_args, args, accelerator):
    """Return ``(tokenizer, prepared)``: a folder from ``hwlm-prepare`` or the corpus prepared now."""
    from hwlm import data as hdata
    from hwlm.tokenization import load_tokenizer

    if args.prepared_data_dir:
        tok_dir = data_args.tokenizer_name or str(Path(args.prepared_data_dir) / "tokenizer")
        tokenizer = load_tokenizer(tok_dir)
        prepared = hdata.load_prepared(args.prepared_data_dir, tokenizer=tokenizer)
        return tokenizer, prepared
    with accelerator.main_process_first():
        corpus = hdata.load_corpus(data_args)
        tokenizer = hdata.resolve_tokenizer(data_args, corpus)
        prepared = hdata.prepare_datasets(
            corpus,
            tokenizer,
            block_size=data_args.block_size,
            num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
        )
    return tokenizer, prepared


def describe_data(data_args, args) -> str:
    """Where the run's data comes from, in words (for messages)."""
    if args.prepared_data_dir:
        return f"--prepared_data_dir {args.prepared_data_dir}"
    files = [f"--{k} {v}" for k in ("train_file", "validation_file", "test_file") if (v := getattr(data_args, k, None))]
    return ", ".join(files) or (f"--dataset_name {data_args.dataset_name}" if data_args.dataset_name
                                else "the embedded corpus")


def make_train_loader(args, prepared, num_processes: int, process_index: int):
    """This process's training loader for ``args.batching`` (the only place the regime is asked)."""
    if args.batching == "streams":
        return StreamLoader(
            prepared.stream_tensor("train"),
            batch_size=args.per_device_train_batch_size,
            bptt=args.bptt,
            num_processes=num_processes,
            process_index=process_index,
            variable_length=args.variable_bptt,
            seed=args.seed,
        )
    return BlockLoader(
        prepared.block_tensor("train"),  # (num_blocks, block_size): a view of the memory-mapped stream
        None,  # labels are the inputs (the model shifts them)
        batch_size=args.per_device_train_batch_size,
        num_processes=num_processes,
        process_index=process_index,
        seed=args.seed,
    )


def build_run(accelerator, model_args, data_args, args, *, command: str, settings: dict,
              resume_path: Path | None = None, saved: dict | None = None, changes: dict | None = None) -> Run:
    """Seed, load the data, build model, loader, optimiser and schedule, prepare them, and resume if asked."""
    from accelerate.utils import set_seed

    set_seed(args.seed)
    tokenizer, prepared = load_training_data(data_args, args, accelerator)
    settings["data_fingerprint"] = data_fingerprint(prepared)  # saved with every checkpoint (state_writer)
    if saved is not None:  # every rank loaded the same data: every rank refuses alike
        check_data_fingerprint(saved.get("settings") or {}, settings["data_fingerprint"], resume_path,
                               describe_data(data_args, args))
    block_size = data_args.block_size if args.batching == "blocks" else None
    check_model_size(resolve_config(model_args, vocab_size=len(tokenizer)))  # the tokenizer's size counts too
    model = build_model(model_args, tokenizer, block_size=block_size, batching=args.batching)
    loader = make_train_loader(args, prepared, accelerator.num_processes, accelerator.process_index)
    valid_tokens = prepared.stream_tensor("validation")
    if args.max_eval_tokens:
        valid_tokens = valid_tokens[: args.max_eval_tokens]

    steps_per_epoch = max(math.ceil(len(loader) / args.gradient_accumulation_steps), 1)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    optimizer = create_optimizer(model, args)
    scheduler = create_scheduler(optimizer, args, num_training_steps=max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    # hwlm's state and the schedule are saved as JSON by state_writer, never registered with accelerate:
    # accelerate loads registered objects with weights_only=False, i.e. it would run code from a crafted file
    run = Run(accelerator=accelerator, model_args=model_args, data_args=data_args, args=args, command=command,
              settings=settings, tokenizer=tokenizer, prepared=prepared, model=model, optimizer=optimizer,
              scheduler=scheduler, loader=loader, valid_tokens=valid_tokens, max_steps=max_steps,
              num_epochs=math.ceil(max_steps / steps_per_epoch))
    if resume_path is not None:
        resume_run(run, resume_path, saved, changes or {})
    run.last_checkpoint = find_latest_checkpoint(run.out)  # named in the divergence messages
    if args.with_tracking:
        accelerator.init_trackers(
            "hwlm", config={k: v for k, v in settings.items() if isinstance(v, (int, float, str, bool))}
        )
    return run
