"""``hwlm-generate``: sample text from a saved model folder.

Example::

    hwlm-generate --model_name_or_path outputs/quickstart --prompt "the meaning of" --max_new_tokens 30 \\
        --temperature 0.8 --top_k 50 --seed 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hwlm.cli.common import check_model_folder, check_tokenizer_fits, parse_command, run_main
from hwlm.errors import UserError

PROG = "hwlm-generate"


@dataclass
class GenerateArguments:
    """Sampling settings."""

    model_name_or_path: str = field(metadata={"help": "A folder written by hwlm-train (or a Hub repo id)."})
    prompt: str = field(default="", metadata={"help": "Text to continue (words outside the vocabulary become <unk>)."})
    max_new_tokens: int = field(default=30, metadata={"help": "Words to generate."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (True) or decode greedily (False)."})
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature (> 0)."})
    top_k: int = field(default=0, metadata={"help": "Keep the k most likely words (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1.0: off)."})
    num_return_sequences: int = field(default=1, metadata={"help": "Samples to draw."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    stop_at_eos: bool = field(default=False, metadata={"help": "Stop a sample at <eos> (end of line)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Use the model code in the folder (hwlm not needed)."})

    def __post_init__(self):
        for name in ("max_new_tokens", "num_return_sequences"):
            value = getattr(self, name)
            if value < 1:
                raise UserError(f"--{name} must be an integer >= 1, got {value}")
        if self.top_k < 0:
            raise UserError(f"--top_k must be an integer >= 0 (0 keeps all words), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top_p must be in (0, 1] (1.0 turns nucleus sampling off), got {self.top_p}")


def generate_text(gen_args: GenerateArguments, model=None, tokenizer=None) -> list[str]:
    """Return ``num_return_sequences`` strings: the prompt followed by the generated words (``<eos>`` shown as a newline)."""
    import torch
    from transformers import AutoTokenizer, set_seed

    import hwlm  # noqa: F401  (registers the Auto classes)
    from hwlm.safe_load import load_causal_lm

    if gen_args.temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {gen_args.temperature}; use --do_sample false for greedy decoding")
    try:
        model = model or load_causal_lm(gen_args.model_name_or_path, trust_remote_code=gen_args.trust_remote_code)
    except OSError as err:  # transformers' message for an unknown Hub id or no connection does not name the model
        raise FileNotFoundError(
            f"could not load model {gen_args.model_name_or_path!r} ({type(err).__name__}: {err}); pass a folder "
            "written by hwlm-train or a Hub repository id"
        ) from err
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(gen_args.model_name_or_path)
    check_tokenizer_fits(tokenizer, model.config.vocab_size, gen_args.model_name_or_path)
    model.eval()
    set_seed(gen_args.seed)
    prompt = gen_args.prompt.strip()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"] if prompt else None
    if ids is None or ids.shape[1] == 0:  # an empty prompt starts a new line
        ids = torch.tensor([[tokenizer.eos_token_id]])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=gen_args.max_new_tokens,
            do_sample=gen_args.do_sample,
            temperature=gen_args.temperature if gen_args.do_sample else None,
            top_k=gen_args.top_k if gen_args.do_sample else None,
            top_p=gen_args.top_p if gen_args.do_sample else None,
            num_return_sequences=gen_args.num_return_sequences,
            eos_token_id=tokenizer.eos_token_id if gen_args.stop_at_eos else None,
            pad_token_id=tokenizer.pad_token_id,
        )
    texts = []
    for row in out:
        new = tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=False)
        new = new.replace(tokenizer.eos_token, "\n").replace(" \n ", "\n").replace(tokenizer.pad_token or "\0", "")
        texts.append((prompt + " " + new.strip(" ")).strip(" ") if prompt else new.strip(" "))
    return texts


def parse(argv: Optional[list[str]] = None) -> tuple:
    """``(GenerateArguments,)`` from the command line (flags, or a ``--config`` preset)."""
    return parse_command((GenerateArguments,), argv, prog=PROG, description=__doc__)


def run(argv: Optional[list[str]] = None) -> list[str]:
    """Parse the flags, generate and print; returns the texts."""
    (gen_args,) = parse(argv)
    check_model_folder(gen_args.model_name_or_path)
    texts = generate_text(gen_args)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(text)
    return texts


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point: `run`; a bad flag, folder or tokenizer is a one-line error with exit status 2."""
    run_main(PROG, run, argv)


if __name__ == "__main__":
    main()
