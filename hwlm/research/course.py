"""The course exercise's Transformer LM, kept as a cautionary reference, next to hwlm's decoder-only Transformer.

The exercise hwlm grew from filled a Transformer into PyTorch's word-language-model skeleton with `torch.nn.Transformer`,
an encoder-decoder: the encoder read the input window x_1..x_T and the decoder was fed the *targets* x_2..x_{T+1}
under a causal mask. The causal mask lets decoder position t read its own input, and that input is the very word it
must predict, so the model learns to copy: its training perplexity falls towards 1, a value no language model can
reach on real text. Nothing in the loss flags it. Fed only what a language model may know (the words before each
target), the same weights are worse than a uniform guess, and generation, where the decoder can only be fed its own
previous outputs, collapses into repeating one word: having learned to copy its decoder input, it copies its own
last output.

`CourseTransformerLM` is that model, written as the course wrote it (sinusoidal positions, post-norm
`nn.Transformer`, untied output layer). `compare_with_hwlm` trains it and an `hwlm_transformer` of the same width,
depth and heads on the same windows for the same steps and reports, for each: the training perplexity as its loss
computes it, the validation perplexity given only the past, and a sampled continuation of the same prompt.
`changes_past_logits` is the check that tells the two apart: change token t+1 and see whether any logit at t moves.

Shape legend: B windows, T positions, V vocabulary, D model width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CourseTransformerLM", "changes_past_logits", "compare_with_hwlm", "CourseComparison"]


class _SinusoidalPositions(nn.Module):
    def __init__(self, width: int, max_len: int = 5000):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, width, 2) * (-math.log(10000.0) / width))
        table = torch.zeros(max_len, width)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        return x + self.table[: x.size(1)]


class CourseTransformerLM(nn.Module):
    """The exercise's encoder-decoder "language model": ``logits = model(inputs, decoder_inputs)``.

    Trained as the course did, ``decoder_inputs`` are the targets (``inputs`` shifted left by one), which is the leak.
    """

    def __init__(self, vocab_size: int, width: int = 64, heads: int = 4, layers: int = 2, feed_forward: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.positions = _SinusoidalPositions(width)
        self.transformer = nn.Transformer(
            d_model=width, nhead=heads, num_encoder_layers=layers, num_decoder_layers=layers,
            dim_feedforward=feed_forward, dropout=dropout, batch_first=True,
        )
        self.output = nn.Linear(width, vocab_size)
        self.width = width

    def forward(self, inputs: torch.LongTensor, decoder_inputs: torch.LongTensor) -> torch.Tensor:
        """(B, T) encoder tokens and (B, T) decoder tokens -> (B, T, V) logits. Every attention is causally masked
        (encoder, decoder, and decoder-to-encoder), so the only leak is what the decoder is fed."""
        scale = math.sqrt(self.width)
        src = self.positions(self.embed(inputs) * scale)
        tgt = self.positions(self.embed(decoder_inputs) * scale)
        mask = nn.Transformer.generate_square_subsequent_mask(inputs.size(1))
        hidden = self.transformer(src, tgt, src_mask=mask, tgt_mask=mask, memory_mask=mask)
        return self.output(hidden)

    # The three ways the exercise's model is used -------------------------------------------------------------

    def course_logits(self, window: torch.LongTensor) -> torch.Tensor:
        """(B, T+1) window -> logits for window[:, 1:] as the course computed them: the targets fed to the decoder."""
        return self(window[:, :-1], window[:, 1:])

    def past_only_logits(self, window: torch.LongTensor) -> torch.Tensor:
        """(B, T+1) window -> logits for window[:, 1:] from the words before each target only (encoder and decoder
        both read x_1..x_T): what the model can be given when the next word is unknown."""
        return self(window[:, :-1], window[:, :-1])

    @torch.no_grad()
    def generate(self, prompt: torch.LongTensor, max_new_tokens: int, seed: int = 0) -> torch.LongTensor:
        """Sampled continuation of (1, P) ``prompt`` (softmax at temperature 1, no truncation): the decoder is fed the
        prompt and then its own outputs, the only text it can be given when the next word is unknown."""
        generator = torch.Generator().manual_seed(seed)
        out = prompt
        for _ in range(max_new_tokens):
            probs = self(out, out)[:, -1].softmax(-1)
            out = torch.cat([out, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return out[:, prompt.size(1):]


def changes_past_logits(logits_fn: Callable[[torch.LongTensor], torch.Tensor], ids: torch.LongTensor, position: int,
                        vocab_size: int) -> bool:
    """Whether changing token ``position + 1`` of (1, T) ``ids`` changes any logit at ``position`` or earlier.

    A causal language model never does: its prediction at t reads tokens 1..t only. ``logits_fn`` maps (1, T) ids
    to (1, T, V) logits (put the model in eval mode first: dropout would move every logit).
    """
    changed = ids.clone()
    changed[0, position + 1] = (changed[0, position + 1] + 1) % vocab_size
    with torch.no_grad():
        before, after = logits_fn(ids), logits_fn(changed)
    return not torch.allclose(before[:, : position + 1], after[:, : position + 1], atol=1e-6, rtol=0)


@dataclass
class CourseComparison:
    """Per model: training perplexity as its own loss computes it, honest validation perplexity, a sampled
    continuation of the first validation words and how many distinct words it has."""

    steps: int
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    train_perplexity: dict[str, float] = field(default_factory=dict)
    validation_perplexity: dict[str, float] = field(default_factory=dict)
    continuation: dict[str, str] = field(default_factory=dict)
    distinct_continuation_words: dict[str, int] = field(default_factory=dict)
    repeat_rate: dict[str, float] = field(default_factory=dict)  # share of sampled words equal to the one before
    sees_the_future: dict[str, bool] = field(default_factory=dict)
    num_parameters: dict[str, int] = field(default_factory=dict)


def _windows(stream: torch.LongTensor, length: int, batch_size: int, generator: torch.Generator) -> torch.LongTensor:
    starts = torch.randint(0, stream.numel() - length - 1, (batch_size,), generator=generator)
    return torch.stack([stream[s: s + length + 1] for s in starts.tolist()])


def _mean_perplexity(loss_fn, stream: torch.LongTensor, length: int, max_windows: int) -> float:
    losses, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, min(stream.numel() - length - 1, max_windows * length), length):
            window = stream[start: start + length + 1].unsqueeze(0)
            losses += float(loss_fn(window)) * length
            count += length
    return math.exp(losses / max(count, 1))


def compare_with_hwlm(train_stream: torch.LongTensor, valid_stream: torch.LongTensor, vocab_size: int, *,
                      steps: int = 300, width: int = 64, heads: int = 4, layers: int = 2, window: int = 35,
                      batch_size: int = 20, learning_rate: float = 1e-3, prompt_length: int = 10,
                      max_new_tokens: int = 20, max_eval_windows: int = 200, log_every: int = 25, seed: int = 0,
                      decode: Callable[[list[int]], str] | None = None) -> CourseComparison:
    """Train the course's model and an `hwlm_transformer` (same width, depth, heads, feed-forward 4x width) on the
    same random windows with AdamW for ``steps`` steps; report what `CourseComparison` holds."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import hwlm  # noqa: F401  (registers hwlm_transformer with the Auto classes)

    torch.manual_seed(seed)
    course = CourseTransformerLM(vocab_size, width, heads, layers, 4 * width)
    config = AutoConfig.for_model("hwlm_transformer", vocab_size=vocab_size, hidden_size=width, num_attention_heads=heads,
                                  num_hidden_layers=layers, intermediate_size=4 * width, hidden_dropout=0.1,
                                  max_position_embeddings=max(window, prompt_length + max_new_tokens))
    ours = AutoModelForCausalLM.from_config(config)

    def course_loss(w):  # the exercise's loss: cross-entropy of the targets it was fed
        return F.cross_entropy(course.course_logits(w).flatten(0, 1), w[:, 1:].flatten())

    def course_honest_loss(w):
        return F.cross_entropy(course.past_only_logits(w).flatten(0, 1), w[:, 1:].flatten())

    def ours_loss(w):
        return F.cross_entropy(ours(input_ids=w[:, :-1]).logits.flatten(0, 1), w[:, 1:].flatten())

    models = {"course encoder-decoder": (course, course_loss, course_honest_loss),
              "hwlm_transformer": (ours, ours_loss, ours_loss)}
    report = CourseComparison(steps=steps)
    for name, (model, train_loss, honest_loss) in models.items():
        generator = torch.Generator().manual_seed(seed)  # both models see the same windows in the same order
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
        curve, recent = [], []
        model.train()
        for step in range(1, steps + 1):
            loss = train_loss(_windows(train_stream, window, batch_size, generator))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            recent.append(loss.item())
            if step % log_every == 0 or step == steps:
                curve.append((step, math.exp(sum(recent) / len(recent))))
                recent = []
        model.eval()
        report.curves[name] = curve
        report.train_perplexity[name] = curve[-1][1]
        report.validation_perplexity[name] = _mean_perplexity(honest_loss, valid_stream, window, max_eval_windows)
        report.num_parameters[name] = sum(p.numel() for p in model.parameters())
        prompt = valid_stream[:prompt_length].unsqueeze(0)
        if model is course:
            new = course.generate(prompt, max_new_tokens, seed=seed)[0].tolist()
            report.sees_the_future[name] = changes_past_logits(course.course_logits, prompt, prompt_length // 2,
                                                                vocab_size)
        else:
            torch.manual_seed(seed)
            new = ours.generate(prompt, max_length=prompt_length + max_new_tokens, min_new_tokens=max_new_tokens,
                                do_sample=True, top_k=0, pad_token_id=0)[0, prompt_length:].tolist()
            report.sees_the_future[name] = changes_past_logits(lambda ids: ours(input_ids=ids).logits, prompt,
                                                                prompt_length // 2, vocab_size)
        report.distinct_continuation_words[name] = len(set(new))
        previous = [int(prompt[0, -1])] + new[:-1]
        report.repeat_rate[name] = sum(a == b for a, b in zip(new, previous)) / len(new)
        report.continuation[name] = decode(new) if decode else " ".join(map(str, new))
    return report
