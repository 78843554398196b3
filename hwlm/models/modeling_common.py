"""Pieces shared by every hwlm model family: the output container, the output layer, input checks and strict loading.

Shape legend: B batch, T time, D width of the features fed to the output layer, V vocabulary size.
This file travels with saved models, so it imports only torch and transformers.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class HwlmCausalLMOutput(ModelOutput):
    """
    Output of every hwlm causal language model.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean next-token cross-entropy over the positions whose label is not -100 (returned when `labels` or
            `shift_labels` is given; a sum divided by `num_items_in_batch` when that is given).
        logits (`torch.FloatTensor` of shape `(B, T, V)`, *optional*):
            Next-token scores. With an adaptive softmax these are log-probabilities, and they are not computed when
            a loss is requested (avoiding the full-vocabulary product is the point of the adaptive softmax).
        cache (*optional*):
            The state to feed back with the next tokens: a `RecurrentState` for recurrent models (truncated BPTT,
            generation), a transformers `Cache` of keys and values for the Transformer.
        hidden_states (`tuple[torch.FloatTensor]`, *optional*):
            With `output_hidden_states=True`: the embedding output, then the output of every layer, each (B, T, *).
        attentions (`tuple[torch.FloatTensor]`, *optional*):
            With `output_attentions=True` (Transformer, eager attention): attention probabilities per layer,
            each (B, nh, T, T_total).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Any = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def check_token_ids(input_ids: torch.LongTensor, vocab_size: int) -> None:
    """Raise a `ValueError` naming the offending id when `input_ids` (B, T) holds ids outside [0, vocab_size)."""
    if not input_ids.numel():
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"input_ids contains token id {high if high >= vocab_size else low}, outside [0, vocab_size={vocab_size}). "
            "The tokenizer and the model disagree: use the tokenizer the model was trained with, or "
            "`model.resize_token_embeddings(len(tokenizer))`."
        )


def build_lm_head(config, in_features: int) -> nn.Module:
    """The output layer: a bias-free `nn.Linear` (full softmax) or `nn.AdaptiveLogSoftmaxWithLoss`."""
    if config.adaptive_softmax_cutoffs:
        return nn.AdaptiveLogSoftmaxWithLoss(
            in_features,
            config.vocab_size,
            cutoffs=list(config.adaptive_softmax_cutoffs),
            div_value=float(config.adaptive_softmax_div_value),
        )
    return nn.Linear(in_features, config.vocab_size, bias=False)


def lm_head_outputs(
    model,
    features: torch.Tensor,
    labels: torch.LongTensor | None,
    shift_labels: torch.LongTensor | None,
    num_items_in_batch: int | torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """
    Apply `model.lm_head` to `features` (B, T, D) and compute the next-token loss.

    `labels` (B, T) are shifted inside (label at t+1 is the target of position t), `shift_labels` (B, T) are
    already aligned with the positions; -100 is ignored in both. Returns `(loss, logits)`.
    """
    head = model.lm_head
    if shift_labels is not None:
        shift_labels = shift_labels.contiguous()  # ForCausalLMLoss calls .view(-1); slices of a batch are not contiguous
    wants_loss = labels is not None or shift_labels is not None
    if not isinstance(head, nn.AdaptiveLogSoftmaxWithLoss):
        logits = head(features)  # (B, T, V)
        loss = None
        if wants_loss:
            loss = model.loss_function(
                logits,
                labels,
                vocab_size=model.config.vocab_size,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
            )
        return loss, logits

    if not wants_loss:
        batch, time, width = features.shape
        return None, head.log_prob(features.reshape(-1, width)).view(batch, time, -1)  # (B, T, V)
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]  # (B, T)
    targets = shift_labels.reshape(-1).to(features.device)  # (B*T,)
    keep = targets != -100
    flat = features.reshape(-1, features.size(-1))[keep]  # (N, D)
    if flat.numel() == 0:
        return features.sum() * 0.0, None
    # AdaptiveLogSoftmaxWithLoss returns the mean negative log-likelihood of the kept targets.
    nll_sum = head(flat.to(head.head.weight.dtype), targets[keep]).loss * keep.sum()
    divisor = keep.sum() if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(divisor):
        divisor = divisor.to(nll_sum.device)
    return nll_sum / divisor, None


class HwlmCausalLMMixin:
    """
    What every hwlm causal LM shares: the embedding accessors transformers uses for tying and resizing (the token
    embedding is `self.model.embed_tokens`, the output layer `self.lm_head`), and a `from_pretrained` that refuses a
    folder whose weights do not cover its config. transformers only warns about missing weights and initialises them
    at random, which would silently hand back an untrained model.
    """

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module | None:
        # An adaptive softmax has no single output matrix to tie or resize.
        return self.lm_head if isinstance(self.lm_head, nn.Linear) else None

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> PreTrainedModel:
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(info.get("missing_keys", []))
        if missing:
            shown = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
            raise ValueError(
                f"The weights in {args[0] if args else kwargs.get('pretrained_model_name_or_path')!s} do not match "
                f"its config: {len(missing)} weight(s) the config asks for are missing: {shown}. The config.json "
                "was probably edited or belongs to another model (e.g. more layers or another cell type); restore "
                "the config.json that was saved with these weights."
            )
        return (model, info) if want_info else model
