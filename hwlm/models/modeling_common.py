"""Pieces shared by every hwlm model family: the output container, the output layer, the heads on top of a body,
input checks and strict loading.

Shape legend: B batch, T time, D width of the features fed to the output layer, V vocabulary size, N labels.
This file travels with saved models, so it imports only torch and transformers.
"""

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel, StoppingCriteria, StoppingCriteriaList
from transformers.modeling_outputs import CausalLMOutputWithPast, SequenceClassifierOutputWithPast
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils.generic import TransformersKwargs

from .config_checks import InvalidInput

#: Keyword arguments a forward accepts besides its named ones: transformers' own (`TransformersKwargs`: the loss's
#: `num_items_in_batch`, `output_attentions`, attention-kernel arguments, ...) and the loss's `shift_labels`. They stay
#: out of the signature as in transformers' models, so `Trainer` does not take `shift_labels` for a label column.
MODEL_KWARGS = frozenset(TransformersKwargs.__annotations__) | {"shift_labels"}


#: transformers Auto class → the suffix of the hwlm class it loads (after the family's stem, e.g. `HwlmLstm`).
FAMILY_AUTO_CLASSES = {
    "AutoModel": "Model",
    "AutoModelForCausalLM": "ForCausalLM",
    "AutoModelForSequenceClassification": "ForSequenceClassification",
}


def declare_causal_lm(model_type: str, class_name: str) -> None:
    """
    List `class_name` among transformers' causal language models (`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`, which
    `AutoModelForCausalLM.register` does not touch). `Trainer` reads that list to decide whether labels must be
    shifted before its label smoother (`label_smoothing_factor`) scores the logits; without it, an hwlm model would be
    smoothed against its unshifted labels and learn to predict its own input, silently. Called when a modeling file
    is imported, so a folder loaded with `trust_remote_code` (without hwlm) is listed too.
    """
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.setdefault(model_type, class_name)


def padding_mask(input_ids, attention_mask, pad_token_id):
    """
    The attention mask a classifier reads: the given one, else 1 wherever `input_ids` (B, T) is not
    `pad_token_id` (as GPT-2's classifier finds the last real token), else None (no padding known).
    """
    if attention_mask is None and input_ids is not None and pad_token_id is not None:
        return (input_ids != pad_token_id).long()  # (B, T)
    return attention_mask


def check_model_kwargs(model: nn.Module, kwargs: dict) -> None:
    """Refuse keyword arguments no hwlm forward reads, as Python does for a misspelt keyword (never ignore them)."""
    unknown = sorted(set(kwargs) - MODEL_KWARGS)
    if unknown:
        raise TypeError(
            f"{type(model).__name__}.forward() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}. "
            f"Named arguments are in its signature; extra ones may be: {', '.join(sorted(MODEL_KWARGS))}."
        )


def is_tracing() -> bool:
    """True under `torch.compile`, `torch.export` or TorchScript tracing, where data-dependent checks cannot run."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


@dataclass
class HwlmCausalLMOutput(CausalLMOutputWithPast):
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
            With `output_hidden_states=True`: the embedding output, then the output of every layer, each (B, T, *);
            the last entry is what the output layer reads (`lm_head(hidden_states[-1])` gives the logits, in eval
            mode), as in transformers' models.
        attentions (`tuple[torch.FloatTensor]`, *optional*):
            With `output_attentions=True` (Transformer): attention probabilities per layer, each (B, nh, T, T_total).
    """

    cache: Any = None


def check_token_ids(input_ids: torch.LongTensor, vocab_size: int) -> None:
    """
    Raise a `ValueError` naming the offending id when `input_ids` (B, T) holds ids outside [0, vocab_size).

    Skipped under `torch.compile` / `torch.export`: reading the ids' range is a data-dependent branch that a traced
    graph cannot hold (the embedding lookup still fails on a bad id there, with a less helpful message).
    """
    if not input_ids.numel() or is_tracing():
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        raise InvalidInput(
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
    shift_labels: torch.LongTensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
    **_,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """
    Apply `model.lm_head` to `features` (B, T, D) and compute the next-token loss.

    `labels` (B, T) are shifted inside (label at t+1 is the target of position t), `shift_labels` (B, T) are
    already aligned with the positions; -100 is ignored in both. Other keyword arguments of the forward (e.g.
    `output_attentions`) are accepted and ignored, so a forward can pass its `**kwargs` on. Returns `(loss, logits)`.
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


class HwlmStrictLoadingMixin:
    """
    Models built only from a valid config, and a `from_pretrained` that refuses a folder whose weights do not cover
    its config. transformers sets `from_pretrained(path, field=value)` overrides on the config after the config's
    own checks ran, and only warns about missing weights and initialises them at random, which would silently hand
    back an untrained model. A task head that is new by design (a classifier loaded from a language-model folder)
    names its weight prefixes in `_new_head_prefixes`; those may be missing.
    """

    _new_head_prefixes: tuple[str, ...] = ()

    def __init__(self, config, *args, **kwargs):
        config.validate_hwlm()  # again: overrides and edits made after the config was built skipped its checks
        super().__init__(config, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:  # hwlm registered its classes: name all of them, not only this one
            # Every class of a family is named after its config (HwlmLstmConfig → HwlmLstmModel, ...) and defined
            # in this class's modeling file, so the saved folder's auto_map can load each of them without hwlm.
            module = type(self).__module__.split(".")[-1]
            stem = self.config_class.__name__.removesuffix("Config")
            names = {auto: f"{module}.{stem}{suffix}" for auto, suffix in FAMILY_AUTO_CLASSES.items()}
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **names}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> PreTrainedModel:
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(k for k in info.get("missing_keys", []) if not k.startswith(cls._new_head_prefixes))
        if missing:
            shown = ", ".join(missing[:6]) + (f" (+{len(missing) - 6} more)" if len(missing) > 6 else "")
            raise InvalidInput(
                f"The weights in {args[0] if args else kwargs.get('pretrained_model_name_or_path')!s} do not match "
                f"its config: {len(missing)} weight(s) the config asks for are missing: {shown}. The config.json "
                "was probably edited or belongs to another model (e.g. more layers or another cell type); restore "
                "the config.json that was saved with these weights."
            )
        return (model, info) if want_info else model


class HwlmCausalLMMixin(HwlmStrictLoadingMixin):
    """
    What every hwlm causal LM shares besides strict loading: the output-layer accessors transformers uses for tying
    and resizing (the token embedding is `self.model.embed_tokens`, the output layer `self.lm_head`).
    """

    def get_output_embeddings(self) -> nn.Module | None:
        # An adaptive softmax has no single output matrix to tie or resize.
        return self.lm_head if isinstance(self.lm_head, nn.Linear) else None

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value


class WordStopCriteria(StoppingCriteria):
    """
    `generate(stop_strings=..., tokenizer=...)` for a word-level vocabulary: a row stops when a stop string ends inside
    its newest word (the string may span several words or stop short of the word's end, as transformers'
    `StopStringCriteria` allows for subword vocabularies). transformers' own criterion finds where each
    vocabulary entry can sit in a stop string by encoding a probe string, which a word-level tokenizer maps to
    `<unk>`; decoding the last few tokens needs no such probe.
    """

    def __init__(self, tokenizer, stop_strings: str | list[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        if not self.stop_strings or not all(isinstance(stop, str) and stop for stop in self.stop_strings):
            raise InvalidInput(f"stop_strings must be non-empty strings, got {stop_strings!r}.")
        # A word holds at least one character, so a stop string of n characters spans at most n + 1 tokens.
        self.tail = max(len(stop) for stop in self.stop_strings) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, -self.tail :].tolist())
        newest = self.tokenizer.batch_decode(input_ids[:, -1:].tolist())
        done = []
        for text, word in zip(texts, newest):
            # A match counts when it ends inside the newest word: text[boundary:] is that word.
            boundary = len(text) - len(word.strip())
            done.append(any(text.find(stop, max(0, boundary - len(stop) + 1)) != -1 for stop in self.stop_strings))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class ContextLimitCriteria(StoppingCriteria):
    """Stop every row once the sequence fills `max_length` positions (a model with a fixed context window)."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), input_ids.shape[-1] >= self.max_length, device=input_ids.device)


class HwlmGenerationMixin:
    """
    `generate()` as transformers', with two word-level fixes applied before it runs:

    * `stop_strings` (argument or generation config) are matched by `WordStopCriteria` on the decoded words;
    * a model with a fixed context (`generation_context_limit()` not None) generates by default up to its context
      (its generation config's `max_new_tokens` is the context, so a pipeline adds no default of its own, and a
      `ContextLimitCriteria` stops at the last position); a length the caller asks for (`max_new_tokens`,
      `max_length`) that does not fit is refused before anything runs, naming the numbers; one that fits is the
      caller's and warns about nothing, as for GPT-2.
    """

    def generation_context_limit(self) -> int | None:
        """The most positions a sequence may fill while generating (None: no limit)."""
        return None

    def generate(self, inputs=None, generation_config: GenerationConfig | None = None, stopping_criteria=None, **kwargs):
        stop_strings = kwargs.pop("stop_strings", None)
        configured = generation_config if generation_config is not None else self.generation_config
        if stop_strings is None and configured.stop_strings is not None:
            stop_strings = configured.stop_strings
            generation_config = copy.deepcopy(configured)
            generation_config.stop_strings = None
        extra = []
        if stop_strings is not None:
            tokenizer = kwargs.pop("tokenizer", None)
            if tokenizer is None:
                raise InvalidInput(
                    "generate(stop_strings=...) needs the model's tokenizer to read the words: pass `tokenizer=`."
                )
            extra.append(WordStopCriteria(tokenizer, stop_strings))
        limit = self.generation_context_limit()
        if limit is not None:
            generation_config, kwargs = self._requested_length(limit, inputs, generation_config, kwargs,
                                                               default=self.generation_config)
            extra.append(ContextLimitCriteria(limit))
        if extra:
            stopping_criteria = StoppingCriteriaList([*(stopping_criteria or []), *extra])
        return super().generate(inputs, generation_config=generation_config, stopping_criteria=stopping_criteria, **kwargs)

    @staticmethod
    def _requested_length(limit: int, inputs, generation_config: GenerationConfig | None, kwargs: dict, *,
                          default: GenerationConfig):
        """
        The caller's length as `max_new_tokens` (argument or their own generation config, where it differs from the
        model's `default`), refused beyond `limit` positions. A `max_length` is rewritten as the same number of new
        tokens: transformers lets the model's default `max_new_tokens` take precedence over a caller's `max_length`.
        Returns `(generation_config, kwargs)`.
        """
        prompt = inputs if inputs is not None else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        prompt_length = prompt.shape[1] if torch.is_tensor(prompt) and prompt.dim() >= 2 else 0
        if any(kwargs.get(k) is not None for k in ("max_new_tokens", "max_length")):
            lengths = kwargs  # the call's arguments
        elif generation_config is not None and any(
            getattr(generation_config, k) != getattr(default, k) for k in ("max_new_tokens", "max_length")
        ):
            generation_config = copy.deepcopy(generation_config)  # the caller's own config, changed in a copy
            lengths = vars(generation_config)
        else:
            return generation_config, kwargs  # the model's default: up to the context
        if lengths.get("max_new_tokens") is None:
            lengths["max_new_tokens"] = max(lengths["max_length"] - prompt_length, 0)
            lengths["max_length"] = None
        total = prompt_length + lengths["max_new_tokens"]
        if total > limit:
            raise InvalidInput(
                f"Sequence of {total} tokens (a prompt of {prompt_length} + {lengths['max_new_tokens']} new) is longer "
                f"than max_position_embeddings={limit}. Ask for at most {max(limit - prompt_length, 0)} new tokens, "
                "shorten the prompt, or leave the length out to generate up to the context."
            )
        return generation_config, kwargs


def last_token_index(attention_mask: torch.Tensor | None, length: int, batch_size: int) -> torch.LongTensor:
    """
    Index (B,) of the last real token of each of `batch_size` rows of `length` positions, with left or right padding
    marked 0 in `attention_mask` (B, >= length); the last position when there is no mask. As GPT-2's classifier, which
    reads the rightmost non-padding token.
    """
    if attention_mask is None:
        return torch.full((batch_size,), length - 1, dtype=torch.long)
    mask = attention_mask[:, -length:]  # (B, T)
    positions = torch.arange(length, device=mask.device)  # (T,)
    return (positions * mask.to(positions.dtype)).argmax(-1)  # (B,)


def classification_outputs(model, pooled: torch.Tensor, labels: torch.Tensor | None, body_outputs):
    """Score the pooled features (B, D') with `model.score` and compute transformers' classification loss."""
    logits = model.score(model.classifier_dropout(pooled))  # (B, N)
    loss = None
    if labels is not None:
        loss = model.loss_function(labels=labels.to(logits.device), pooled_logits=logits, config=model.config)
    return SequenceClassifierOutputWithPast(
        loss=loss,
        logits=logits,
        cache=body_outputs.cache,
        hidden_states=body_outputs.hidden_states,
        attentions=getattr(body_outputs, "attentions", None),
    )
