"""``hwlm-gradflow``: how far back the gradient of the loss reaches, per position and layer (see hwlm/research/gradient_flow.py).

Examples::

    # saved folders and/or fresh models from a config (model_type:field=value,...), one sequence of the validation split
    hwlm-gradflow --model outputs/quickstart --model hwlm_rnn:cell_type=tanh,hidden_size=128 --output_dir outputs/gradflow
    # random tokens instead of text
    hwlm-gradflow --model hwlm_lstm:hidden_size=64 --random_tokens --sequence_length 100
    # tanh RNN, GRU, LSTM and Transformer of the same size, at initialisation and after a short training run
    hwlm-gradflow --compare-defaults --output_dir outputs/gradflow-compare

Writes ``gradflow.json`` (or ``gradflow_compare.json``) and the PNG of the same name into ``--output_dir``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from hwlm.cli.common import parse_command, run_main
from hwlm.errors import UserError

PROG = "hwlm-gradflow"

#: The four architectures of ``--compare_defaults`` (label, model_type, config fields besides the shared size).
DEFAULT_MODELS = (
    ("tanh RNN", "hwlm_rnn", {"cell_type": "tanh"}),
    ("GRU", "hwlm_rnn", {"cell_type": "gru"}),
    ("LSTM", "hwlm_lstm", {}),
    ("Transformer", "hwlm_transformer", {}),
    # Segment memory of one training window (--bptt), trained on streams like the recurrent models.
    ("Transformer + memory", "hwlm_transformer", {"position_embedding_type": "alibi", "memory_length": None}),
)


@dataclass
class GradflowArguments:
    """What to measure, on which sequence, and (``--compare_defaults``) how to train the four default models."""

    model: Optional[list[str]] = field(
        default=None,
        metadata={
            "help": "A model: a saved folder, a config.json (fresh weights), or model_type:field=value,... "
            "(fresh weights, e.g. hwlm_rnn:cell_type=gru,hidden_size=64). Repeat (--model A --model B) to overlay."
        },
    )
    compare_defaults: bool = field(
        default=False,
        metadata={"help": "Compare a tanh RNN, a GRU, an LSTM, a Transformer and a Transformer with segment memory "
                  "of the same size, at initialisation and after a short training run on the data flags' corpus."},
    )
    output_dir: str = field(default="outputs/gradflow", metadata={"help": "Where the JSON and PNG are written."})
    sequence_length: int = field(default=64, metadata={"help": "T: positions in each measured sequence."})
    num_sequences: int = field(
        default=1, metadata={"help": "Sequences measured (consecutive windows); norms are their geometric mean."}
    )
    split: str = field(default="validation", metadata={"help": "Corpus split the sequences are read from."})
    offset: int = field(default=0, metadata={"help": "Token position in the split where the first sequence starts."})
    random_tokens: bool = field(default=False, metadata={"help": "Uniformly random tokens instead of corpus text."})
    seed: int = field(default=0, metadata={"help": "Seed of fresh weights, random tokens and training."})
    hidden_size: int = field(default=64, metadata={"help": "--compare_defaults: hidden_size of every model."})
    num_hidden_layers: int = field(default=2, metadata={"help": "--compare_defaults: layers of every model."})
    max_train_steps: int = field(default=300, metadata={"help": "--compare_defaults: optimiser steps per model."})
    learning_rate: float = field(
        default=2e-3, metadata={"help": "--compare_defaults: AdamW learning rate (the same for every model)."}
    )
    train_batch_size: int = field(default=20, metadata={"help": "--compare_defaults: streams or blocks per step."})
    bptt: int = field(
        default=35,
        metadata={"help": "--compare_defaults: window of the state-carrying models; a model without state "
                  "carrying trains on blocks of --block_size, as many per step as give the same tokens per step."},
    )
    num_threads: int = field(
        default=1,
        metadata={"help": "CPU threads for torch. Models this small run fastest on one: the default comparison "
                  "took 78 s with 1 thread and ~10x longer with 2 on a shared 2-core machine."},
    )

    def __post_init__(self):
        for name in ("sequence_length", "num_sequences", "hidden_size", "num_hidden_layers", "max_train_steps",
                     "train_batch_size", "bptt", "num_threads"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.offset < 0:
            raise UserError(f"--offset must be a token position >= 0, got {self.offset}")
        if not self.learning_rate > 0:
            raise UserError(f"--learning_rate must be a positive number, got {self.learning_rate}")


def _merge_repeated(argv: list[str], flag: str) -> list[str]:
    """``--model A --model B`` → ``--model A B`` (argparse's nargs='+' would keep only the last occurrence)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + ([flag, *values] if values else [])


def model_arguments(spec: str):
    """Turn a ``--model`` value into `hwlm.training.arguments.ModelArguments` and a label."""
    from hwlm.training.arguments import ModelArguments

    path = Path(spec)
    if path.is_dir() and (path / "config.json").is_file():
        has_weights = any(path.glob("*.safetensors"))
        key = "model_name_or_path" if has_weights else "config_name"
        return ModelArguments(**{key: str(path)}), path.name or str(path)
    if path.is_file() and path.suffix == ".json":
        return ModelArguments(config_name=str(path)), path.stem
    if path.exists() or "/" in spec:
        raise UserError(
            f"--model {spec!r} is neither a model folder (with config.json) nor a config.json file nor "
            "model_type:field=value,...; check the path."
        )
    model_type, _, overrides = spec.partition(":")
    return ModelArguments(model_type=model_type, config_overrides=overrides or None), spec


def _build(model_args, tokenizer, seed: int):
    from accelerate.utils import set_seed

    from hwlm.model_building import build_model

    set_seed(seed)  # fresh weights are reproducible
    return build_model(model_args, tokenizer, batching="blocks").eval()


def _tokenizer_and_stream(args: GradflowArguments, data_args, specs: list, prepared_dir: Path | None = None):
    """The tokenizer (of --tokenizer_name, else the first model folder holding one, else the corpus default) and,
    unless --random_tokens, the prepared corpus."""
    from hwlm import data as hdata
    from hwlm.tokenization import load_tokenizer

    tokenizer = None
    if not data_args.tokenizer_name:
        for model_args, _ in specs:
            folder = model_args.model_name_or_path
            if folder and (Path(folder) / "tokenizer.json").is_file():
                tokenizer = load_tokenizer(folder)
                break
    corpus = hdata.load_corpus(data_args)
    tokenizer = tokenizer or hdata.resolve_tokenizer(data_args, corpus)
    if args.random_tokens and prepared_dir is None:
        return tokenizer, None
    prepared = hdata.prepare_datasets(
        corpus, tokenizer, block_size=data_args.block_size, num_proc=data_args.preprocessing_num_workers,
        output_dir=prepared_dir, source=hdata.describe_source(data_args),
    )
    return tokenizer, prepared


def _sequences(args: GradflowArguments, prepared, vocab_size: int):
    from hwlm.research.gradient_flow import corpus_sequences, random_sequences

    if args.random_tokens:
        ids, targets = random_sequences(vocab_size, args.sequence_length, num_sequences=args.num_sequences, seed=args.seed)
        return ids, targets, {"source": "random tokens", "vocab_size": vocab_size, "seed": args.seed}
    tokens = prepared.stream_tensor(args.split)
    ids, targets = corpus_sequences(tokens, args.sequence_length, num_sequences=args.num_sequences, offset=args.offset)
    source = {"source": prepared.source.get("kind", "corpus"), "split": args.split, "offset": args.offset}
    if prepared.tokenizer is not None:
        source["text"] = prepared.tokenizer.decode(ids[0].tolist()).strip()
        source["target"] = prepared.tokenizer.decode([int(targets[0])]).strip()
    return ids, targets, source


def _write(out: Path, stem: str, payload: dict, groups: list, title: str) -> dict:
    from hwlm.research.gradient_flow import plot_gradient_flow

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot_gradient_flow(groups, out / f"{stem}.png", title=title)
    payload["files"] = {"json": str(out / f"{stem}.json"), "png": str(out / f"{stem}.png")}
    return payload


def _summary(flows) -> str:
    lines = []
    for flow in flows:
        decay = ", ".join(f"{k} {v:.3f}" for k, v in flow.decay.items() if v is not None and not k.endswith("_carried"))
        lines.append(f"  {flow.label}: per-step ratio {decay}")
        diagnostics = flow.info["diagnostics"]
        if "max_gradient_before_window" in diagnostics:
            lines.append(
                f"    segment memory: the gradient before the last {diagnostics['window']}-token window is "
                f"{diagnostics['max_gradient_before_window']:g} (the memory is detached between windows; its "
                "attention still reads that context in the forward pass)"
            )
    return "\n".join(lines)


def measure_models(args: GradflowArguments, data_args) -> dict:
    """``--model ...``: measure every model on the same sequences; write gradflow.json/png."""
    from hwlm.research.gradient_flow import gradient_flow

    specs = [model_arguments(spec) for spec in args.model]
    tokenizer, prepared = _tokenizer_and_stream(args, data_args, specs)
    models = [(label, _build(model_args, tokenizer, args.seed)) for model_args, label in specs]
    vocab = min(model.config.vocab_size for _, model in models)
    ids, targets, source = _sequences(args, prepared, vocab)
    flows = [gradient_flow(model, ids, targets, label=label) for label, model in models]
    payload = {
        "sequence": {**source, "sequence_length": args.sequence_length, "num_sequences": args.num_sequences},
        "loss": "cross-entropy of the prediction at the last position T; norms indexed by distance d = T - t",
        "models": [flow.to_dict() for flow in flows],
    }
    print(_summary(flows))
    return _write(Path(args.output_dir), "gradflow", payload, [("", flows)], "gradient of the last-position loss")


def compare_defaults(args: GradflowArguments, data_args) -> dict:
    """``--compare_defaults``: the five default architectures at init and after ``max_train_steps`` of AdamW."""
    from transformers import AutoModelForCausalLM

    from hwlm.research.gradient_flow import gradient_flow
    from hwlm.evaluation import supports_state_carrying
    from hwlm.training.arguments import ModelArguments, TrainingArguments
    from hwlm.training.loop import train

    out = Path(args.output_dir)
    size = {"hidden_size": args.hidden_size, "num_hidden_layers": args.num_hidden_layers}
    context = max(args.sequence_length, data_args.block_size)
    tokenizer, prepared = _tokenizer_and_stream(args, data_args, [], prepared_dir=out / "data")
    ids, targets, source = _sequences(args, prepared, len(tokenizer))
    at_init, trained, runs = [], [], {}
    for label, model_type, extra in DEFAULT_MODELS:
        fields = {**size, **{k: (args.bptt if k == "memory_length" else v) for k, v in extra.items()}}
        if model_type == "hwlm_transformer":  # the only family with a context length and heads to size
            fields.update(max_position_embeddings=context, num_attention_heads=4, intermediate_size=4 * args.hidden_size)
        model_args = ModelArguments(
            model_type=model_type, config_overrides=",".join(f"{k}={v}" for k, v in fields.items())
        )
        model = _build(model_args, tokenizer, args.seed)
        at_init.append(gradient_flow(model, ids, targets, label=label, window=args.bptt))
        run_dir = out / "models" / label.replace(" ", "_").lower()
        carries_state = supports_state_carrying(model)
        # The same number of training tokens per step for every model: bptt-token windows or block_size blocks.
        tokens_per_step = args.train_batch_size * args.bptt
        batch_size = args.train_batch_size if carries_state else max(1, round(tokens_per_step / data_args.block_size))
        train_args = TrainingArguments(
            output_dir=str(run_dir), overwrite_output_dir=True, prepared_data_dir=str(out / "data"),
            batching="streams" if carries_state else "blocks", bptt=args.bptt,
            per_device_train_batch_size=batch_size, per_device_eval_batch_size=10,
            optimizer="adamw", learning_rate=args.learning_rate, lr_scheduler_type="constant",
            max_grad_norm=0.25, max_train_steps=args.max_train_steps, checkpointing_steps="no",
            logging_steps=max(args.max_train_steps // 5, 1), seed=args.seed, disable_tqdm=True,
        )
        start = time.time()
        results = train(model_args, data_args, train_args, command=f"hwlm-gradflow --compare_defaults ({label})")
        runs[label] = {
            "model_folder": str(run_dir), "train_seconds": round(time.time() - start, 1),
            "train_steps": results["train_steps"], "validation_perplexity": results.get("validation_perplexity"),
            "batching": train_args.batching, "batch_size": batch_size,
            "tokens_per_step": batch_size * (args.bptt if carries_state else data_args.block_size),
            "config_overrides": model_args.config_overrides,
        }
        trained_model = AutoModelForCausalLM.from_pretrained(run_dir)
        trained.append(gradient_flow(trained_model, ids, targets, label=label, window=args.bptt))
    payload = {
        "sequence": {**source, "sequence_length": args.sequence_length, "num_sequences": args.num_sequences},
        "loss": "cross-entropy of the prediction at the last position T; norms indexed by distance d = T - t",
        "settings": {k: v for k, v in asdict(args).items() if k != "model"},
        "training": runs,
        "at_init": [flow.to_dict() for flow in at_init],
        "trained": [flow.to_dict() for flow in trained],
    }
    print("at initialisation:\n" + _summary(at_init) + "\nafter training:\n" + _summary(trained))
    groups = [("at initialisation", at_init), (f"after {args.max_train_steps} steps", trained)]
    title = (f"gradient of the last-position loss; hidden {args.hidden_size}, {args.num_hidden_layers} layers, "
             f"the same {args.sequence_length}-token sequence")
    return _write(out, "gradflow_compare", payload, groups, title)


def parse(argv: list[str] | None = None) -> tuple:
    """``(GradflowArguments, DataArguments)`` from the command line; checks --model / --compare_defaults."""
    from hwlm.settings import DataArguments

    argv = _merge_repeated(list(sys.argv[1:] if argv is None else argv), "--model")
    args, data_args = parse_command((GradflowArguments, DataArguments), argv, prog=PROG, description=__doc__)
    if args.compare_defaults == bool(args.model):
        raise UserError("pass either --model (one or more times) or --compare_defaults, not both and not neither.")
    return args, data_args


def run(argv: list[str] | None = None) -> dict:
    """Parse ``hwlm-gradflow`` flags (plus the data flags of hwlm-prepare) and run; returns what the JSON holds."""
    args, data_args = parse(argv)
    import torch  # after parsing: --help and a settings error answer without torch

    torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    return compare_defaults(args, data_args) if args.compare_defaults else measure_models(args, data_args)


def main(argv: list[str] | None = None) -> None:
    """The console command: `run`; a bad flag, model or input file is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
