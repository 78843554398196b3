"""hwlm's Transformer against transformers' own ``GPT2LMHeadModel`` at the same width, depth, heads and context.

Both are pre-LN GPT-style decoders with learned positions, ``gelu_new``, tied embeddings, no dropout and the same
attention implementation (SDPA), so they have the same parameter count up to GPT-2's extra LayerNorm-free
details (it has none here). Two figures, each measured side by side in one process, interleaved:

- training tokens/s: (B=20, T=35) blocks of the training stream, ``model(input_ids=x, labels=x)`` (shifted
  inside both models), backward, clip 0.25, SGD step;
- generation tokens/s: greedy ``generate()`` of 200 new tokens with the cache from a 10-token prompt, batch 1.

Target: hwlm / GPT-2 >= 1.0 for both. Peak RSS growth during each side's timed runs is reported.

    python bench/bench_gpt2.py [--quick]
"""

from __future__ import annotations

import argparse

import torch

from common import add_common_args, encode_corpus, markdown_table, paired_rates, setup, write_result

import hwlm  # noqa: F401
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel


def build_pair(vocab_size: int, hidden: int, layers: int, heads: int, context: int):
    """(hwlm Transformer, GPT2LMHeadModel) of identical shape."""
    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "hwlm_transformer", vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=context,
        hidden_act="gelu_new", tie_word_embeddings=True), attn_implementation="sdpa")
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads,
                                      n_positions=context, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                                      attn_implementation="sdpa"))
    return ours, gpt2


def block_trainer(model, tokens: torch.Tensor, batch: int, bptt: int, steps: int):
    """``steps`` SGD steps on consecutive (batch, bptt) blocks with ``labels=input_ids``; returns tokens."""
    blocks = tokens[: tokens.numel() // bptt * bptt].view(-1, bptt)  # (num_blocks, T)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    state = {"i": 0}
    model.train()

    def run() -> int:
        for _ in range(steps):
            if state["i"] + batch > blocks.size(0):
                state["i"] = 0
            x = blocks[state["i"] : state["i"] + batch]  # (B, T)
            state["i"] += batch
            optimizer.zero_grad(set_to_none=True)
            model(input_ids=x, labels=x).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
        return steps * batch * bptt

    return run


def generator(model, prompt: torch.Tensor, new_tokens: int, use_cache: bool = True):
    """Greedy ``generate()`` of exactly ``new_tokens`` tokens; returns that count."""
    model.eval()

    @torch.no_grad()
    def run() -> int:
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                             pad_token_id=0, eos_token_id=None)
        assert out.size(1) == prompt.size(1) + new_tokens
        return new_tokens * prompt.size(0)

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--new_tokens", type=int, default=None, help="generated tokens (default 200)")
    args = parser.parse_args(argv)
    setup(args)
    if args.tiny:
        vocab, hidden, layers, heads, batch, bptt, steps, new = 100, 16, 2, 2, 4, 8, 1, 8
    else:
        vocab, hidden, layers, heads, batch, bptt = 10000, 200, 2, 4, 20, 35
        steps, new = (2, 200) if args.quick else (8, 200)
    new = args.new_tokens or new
    rounds = args.rounds or (1 if args.tiny else 2 if args.quick else 6)
    context = 256 if not args.tiny else 32
    data = encode_corpus("ptb", random_tokens=args.quick, vocab_size=vocab if args.tiny else None,
                         max_tokens=20_000 if args.quick else None)
    ours, gpt2 = build_pair(data["vocab_size"], hidden, layers, heads, context)
    params = {n: sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())
              for n, m in (("hwlm", ours), ("gpt2", gpt2))}
    train = paired_rates({"hwlm": block_trainer(ours, data["train"], batch, bptt, steps),
                          "gpt2": block_trainer(gpt2, data["train"], batch, bptt, steps)}, rounds=rounds)
    prompt = data["valid"][:10].unsqueeze(0)  # (1, 10)
    gen = paired_rates({"hwlm": generator(ours, prompt, new), "gpt2": generator(gpt2, prompt, new)}, rounds=rounds)
    rows = [["training (B=%d, T=%d)" % (batch, bptt), train["hwlm"]["median"], train["gpt2"]["median"],
             f"{train['ratio']:.2f}x", train["hwlm"]["rss_growth_mb"], train["gpt2"]["rss_growth_mb"]],
            [f"greedy generate(), {new} new tokens, cache", gen["hwlm"]["median"], gen["gpt2"]["median"],
             f"{gen['ratio']:.2f}x", gen["hwlm"]["rss_growth_mb"], gen["gpt2"]["rss_growth_mb"]]]
    table = markdown_table(["task", "hwlm tok/s", "GPT2LMHeadModel tok/s", "hwlm/GPT-2 (>= 1.0)",
                            "hwlm RSS growth MB", "GPT-2 RSS growth MB"], rows)
    header = (f"hwlm Transformer vs GPT2LMHeadModel: {layers} layers, width {hidden}, {heads} heads, context "
              f"{context}, V={data['vocab_size']:,} ({params['hwlm']:,} vs {params['gpt2']:,} parameters); "
              f"median of {rounds} interleaved rounds; data: {data['source']}")
    print(header + "\n\n" + table)
    out = {"benchmark": "gpt2", "header": header, "table": table, "params": params, "train": train,
           "generate": gen, "new_tokens": new}
    print(f"\nwrote {write_result('bench_gpt2', out, args.quick, args.out_dir)}")
    return out


if __name__ == "__main__":
    main()
