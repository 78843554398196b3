"""
hwlm's causal, decoder-only Transformer word-level language model (GPT-style, pre-LayerNorm).

    input_ids ─► token + position embeddings ─► dropout ─► L × [x + Attn(LN(x)); x + MLP(LN(x))] ─► LN ─► logits

Position t attends to positions <= t only: the mask comes from `transformers.masking_utils.create_causal_mask`,
which also folds in padding and the key/value cache, and attention runs through transformers' attention
interface (eager, SDPA, ...), so cached single-token decoding, left padding and chunked prefill stay correct.

The classes follow transformers' layout (GPT-2's): `HwlmTransformerPreTrainedModel` → `HwlmTransformerModel` (the
body, `AutoModel`; `last_hidden_state` is after the final LayerNorm) → `HwlmTransformerForCausalLM` and
`HwlmTransformerForSequenceClassification` (scores the last real token, as GPT-2 does).

Shape legend: B batch, T time (new tokens), S keys (cached + new), C hidden size, nh heads, hs head size (C / nh),
V vocabulary size.
This file travels with saved models (`trust_remote_code`), so it imports only torch, transformers and siblings.
It is just over 500 lines on purpose: one modeling file per family, as transformers' own `models/<name>/`.
"""

import math
from collections.abc import Callable

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from torch.utils import _pytree as pytree
from transformers.cache_utils import Cache, DynamicCache, DynamicSlidingWindowLayer
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.utils import can_return_tuple, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs
from transformers.utils.deprecation import deprecate_kwarg

from .config_checks import InvalidInput
from .configuration_transformer import HwlmTransformerConfig
from .hf_internals import attention_implementation, eager_mask_config
from .modeling_common import (
    HwlmCausalLMMixin,
    HwlmCausalLMOutput,
    HwlmGenerationMixin,
    HwlmStrictLoadingMixin,
    build_lm_head,
    check_model_kwargs,
    check_token_ids,
    classification_outputs,
    declare_causal_lm,
    is_tracing,
    last_token_index,
    lm_head_outputs,
    padding_mask,
)

logger = logging.get_logger(__name__)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention. query (B, nh, T, hs), key/value (B, nh, S, hs), additive mask (B, 1, T, S)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, nh, T, S)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (B, T, nh, hs)
    return out, probs


def sinusoidal_positions(num_positions: int, width: int) -> torch.Tensor:
    """The fixed position table of Vaswani et al. (2017): (num_positions, width)."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(num_positions, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes (Press et al. 2022): head h of nh gets 2^(-8h/nh), from 2^(-8/nh) down to 2^-8. (nh,)"""
    return torch.pow(2.0, -8.0 * torch.arange(1, num_heads + 1, dtype=torch.float32) / num_heads)


class SegmentMemory(DynamicCache):
    """
    The memory a Transformer with `memory_length` carries from window to window: per layer, the keys and values of
    the last `memory_length` positions (transformers' sliding-window cache layers), and how many tokens it has seen.
    It is the `cache` in and out, like a recurrent model's state: truncated BPTT calls `detach()` between windows.
    """

    def __init__(self, config: HwlmTransformerConfig):
        super().__init__(config=config)

    def detach(self) -> "SegmentMemory":
        """A copy cut from the autograd graph (the truncation of truncated BPTT); this memory is left as it is, as
        `RecurrentState.detach()` and `torch.Tensor.detach()` do."""
        leaves, context = _flatten_memory(self)
        return _unflatten_memory([t.detach() for t in leaves], context)


def _flatten_memory(memory: SegmentMemory):
    layers = [layer for layer in memory.layers if layer.is_initialized]
    leaves = [t for layer in layers for t in (layer.keys, layer.values)]
    context = (memory.layers[0].sliding_window, len(memory.layers), [layer.cumulative_length for layer in layers])
    return leaves, context


def _unflatten_memory(leaves, context) -> SegmentMemory:
    sliding_window, num_layers, seen = context
    memory = SegmentMemory.__new__(SegmentMemory)
    Cache.__init__(memory, layers=[DynamicSlidingWindowLayer(sliding_window) for _ in range(num_layers)])
    for layer, keys, values, count in zip(memory.layers, leaves[0::2], leaves[1::2], seen):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values, layer.cumulative_length = keys, values, count
    return memory


# A pytree node: `torch.export` can take and return a memory, and a checkpoint can store it as plain tensors.
pytree.register_pytree_node(
    SegmentMemory, _flatten_memory, _unflatten_memory, serialized_type_name=f"{__name__}.SegmentMemory"
)


class HwlmAttention(nn.Module):
    """Multi-head causal self-attention with a key/value cache."""

    def __init__(self, config: HwlmTransformerConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True  # read by the SDPA/flash interfaces
        self.num_key_value_groups = 1
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask, cache: Cache | None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, time, width = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, time, 3, self.num_heads, self.head_dim)  # (B, T, 3, nh, hs)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hs)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)  # each (B, nh, S, hs)
        implementation = attention_implementation(self.config)
        if kwargs.pop("output_attentions", False) and implementation != "eager":
            # SDPA and flash kernels never form the probabilities: compute this call eagerly rather than return None.
            logger.warning_once(
                f"output_attentions=True: `{implementation}` attention cannot return attention probabilities, so "
                "these calls use eager attention. Load the model with attn_implementation='eager' to make it the default."
            )
            implementation = "eager"
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, probs = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        out = out.reshape(batch, time, width)  # (B, T, C)
        return self.o_proj(out), probs


class HwlmMLP(nn.Module):
    def __init__(self, config: HwlmTransformerConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.effective_intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc_out = nn.Linear(config.effective_intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class HwlmDecoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm block: x + Attn(LN(x)), then x + MLP(LN(x)). Checkpointed as a whole under activation checkpointing."""

    def __init__(self, config: HwlmTransformerConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = HwlmAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HwlmMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, attention_mask, cache: Cache | None = None, **kwargs):
        attn_out, probs = self.attn(self.ln_1(x), attention_mask, cache, **kwargs)
        x = x + self.dropout(attn_out)
        x = x + self.dropout(self.mlp(self.ln_2(x)))
        return x, probs


class HwlmTransformerPreTrainedModel(HwlmStrictLoadingMixin, PreTrainedModel):
    config_class = HwlmTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HwlmDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # What `output_hidden_states` / `output_attentions` return, recorded by transformers' `capture_outputs` hooks:
    # the first layer's input (the embedding output), every layer's output (the last replaced by the final LayerNorm's,
    # what the head reads), and each attention's probabilities (computed eagerly when requested; see HwlmAttention).
    _can_record_outputs = {
        "hidden_states": HwlmDecoderLayer,
        "attentions": OutputRecorder(HwlmAttention, index=1),
    }

    @property
    def carries_state(self) -> bool:
        """hwlm's capability (see `HwlmRecurrentPreTrainedModel.carries_state`): with segment memory the cache is
        carried across the windows of a stream like a recurrent state."""
        return self.config.memory_length is not None

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2's scheme: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2L).
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, HwlmTransformerModel):
            # The sinusoidal table and the ALiBi slopes are non-persistent buffers: from_pretrained builds them on the
            # meta device, so they must be recomputed here rather than loaded.
            config = self.config
            if module.position_table is not None:
                init.copy_(module.position_table, sinusoidal_positions(config.max_position_embeddings, config.hidden_size))
            if module.alibi_slopes is not None:
                init.copy_(module.alibi_slopes, alibi_slopes(config.num_attention_heads))
        if isinstance(module, (HwlmAttention, HwlmMLP)):
            projection = module.o_proj if isinstance(module, HwlmAttention) else module.fc_out
            init.normal_(projection.weight, mean=0.0, std=std / math.sqrt(2 * self.config.num_hidden_layers))


class HwlmTransformerModel(HwlmTransformerPreTrainedModel):
    """The body (`AutoModel`): embeddings, decoder layers and final LayerNorm, (B, T) ids → (B, T, C) features."""

    def __init__(self, config: HwlmTransformerConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        # Fixed functions of the config are non-persistent buffers: recomputed at load time rather than stored.
        kind = config.position_embedding_type
        self.embed_positions = (
            nn.Embedding(config.max_position_embeddings, config.hidden_size) if kind == "learned" else None
        )
        table = sinusoidal_positions(config.max_position_embeddings, config.hidden_size) if kind == "sinusoidal" else None
        self.register_buffer("position_table", table, persistent=False)
        slopes = alibi_slopes(config.num_attention_heads) if kind == "alibi" else None
        self.register_buffer("alibi_slopes", slopes, persistent=False)
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(HwlmDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def _positions(self, position_ids: torch.LongTensor, past: int, time: int, dtype: torch.dtype) -> torch.Tensor | float:
        """Position vectors (B or 1, T, C) of the new tokens (0 with ALiBi), refusing positions beyond the context."""
        if self.config.memory_length is not None:  # ALiBi, attention span memory_length + 1: any length works
            return 0.0
        limit = self.config.max_position_embeddings
        # The range check on the ids' values is a data-dependent branch: skipped when traced (export, compile).
        if past + time > limit or (not is_tracing() and int(position_ids.max()) >= limit):
            raise InvalidInput(
                f"Sequence of {past + time} tokens is longer than max_position_embeddings={limit}. Shorten the "
                f"input (or prompt + max_new_tokens) to at most {limit} tokens, evaluate long texts with a "
                "sliding window, or train a model with a larger `max_position_embeddings`."
            )
        if self.embed_positions is not None:
            return self.embed_positions(position_ids)
        if self.position_table is not None:
            return self.position_table[position_ids].to(dtype)
        return 0.0  # ALiBi: positions enter the attention scores, not the embeddings

    def _alibi_mask(self, inputs_embeds, attention_mask, cache, position_ids, past: int) -> torch.Tensor:
        """
        The additive mask (B, nh, T, S) of ALiBi attention: causal (and, with memory, limited to `memory_length`
        earlier positions) and padding as transformers builds them, plus `-slope_h * distance` per head. The S keys
        are the last S positions up to the newest token (cached, then new), so distances need no absolute positions.
        """
        config = eager_mask_config(self.config)  # an additive float mask, to which the bias is added
        build = create_sliding_window_causal_mask if config.memory_length is not None else create_causal_mask
        mask = build(
            config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache, position_ids=position_ids
        )  # (B, 1, T, S)
        time, keys = mask.shape[-2:]
        query_positions = past + torch.arange(time, device=mask.device)  # (T,)
        key_positions = past + time - keys + torch.arange(keys, device=mask.device)  # (S,)
        distance = (query_positions[:, None] - key_positions[None, :]).clamp(min=0)  # (T, S)
        bias = -self.alibi_slopes.to(mask.device)[:, None, None] * distance  # (nh, T, S)
        return mask + bias.to(mask.dtype).unsqueeze(0)  # (B, nh, T, S)

    def _causal_mask(self, inputs_embeds, attention_mask, cache, position_ids, output_attentions: bool):
        """transformers' causal mask (with padding and cache) in the form the attention implementation takes."""
        # With output_attentions the calls attend eagerly (see HwlmAttention), so they need the eager (additive) mask.
        config = eager_mask_config(self.config) if output_attentions else self.config
        return create_causal_mask(
            config=config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )

    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): token ids in `[0, vocab_size)`.
            attention_mask (`torch.Tensor` of shape `(B, S)`, *optional*): 1 for real tokens, 0 for padding, over
                the cached and the new tokens.
            cache (`transformers.Cache`, *optional*): keys and values of earlier tokens (`past_key_values` is
                accepted as its deprecated name, as in transformers' models).
            use_cache (`bool`, *optional*): build/extend and return the cache (default `config.use_cache`; off
                while training with activation checkpointing).
            inputs_embeds (`torch.Tensor` of shape `(B, T, C)`, *optional*): instead of `input_ids`.
            position_ids (`torch.LongTensor` of shape `(B, T)`, *optional*): positions of the new tokens;
                `generate()` derives them from the attention mask so left padding does not shift positions.
            output_hidden_states (`bool`, *optional*): the embedding output and every layer's output; the last
                entry is after the final LayerNorm (`last_hidden_state`), as in GPT-2.
            output_attentions (`bool`, *optional*): attention probabilities per layer (computed eagerly).
        """
        check_model_kwargs(self, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise InvalidInput("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            check_token_ids(input_ids, self.config.vocab_size)
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            logger.warning_once("use_cache=True is incompatible with activation checkpointing: using use_cache=False.")
            use_cache = False
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        if use_cache and cache is None:
            cache = SegmentMemory(config) if config.memory_length is not None else DynamicCache(config=config)
        cache = cache if use_cache else None

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        past = cache.get_seq_length() if cache is not None else 0
        time = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past, past + time, device=inputs_embeds.device).unsqueeze(0)  # (1, T)
        x = self.dropout(inputs_embeds + self._positions(position_ids, past, time, inputs_embeds.dtype))

        if config.position_embedding_type == "alibi":
            mask = self._alibi_mask(inputs_embeds, attention_mask, cache, position_ids, past)
        else:
            mask = self._causal_mask(inputs_embeds, attention_mask, cache, position_ids, output_attentions)
        for layer in self.layers:
            x, _ = layer(x, mask, cache=cache, output_attentions=output_attentions, **kwargs)
        # hidden_states and attentions are recorded by transformers' hooks (`_can_record_outputs`), as for GPT-2.
        return BaseModelOutputWithPast(last_hidden_state=self.norm(x), cache=cache)


class HwlmTransformerForCausalLM(HwlmCausalLMMixin, HwlmGenerationMixin, HwlmTransformerPreTrainedModel, GenerationMixin):
    """Causal decoder-only Transformer word-level language model; see [`HwlmTransformerConfig`]."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HwlmTransformerConfig):
        super().__init__(config)
        self.model = HwlmTransformerModel(config)
        self.lm_head = build_lm_head(config, config.hidden_size)
        if config.memory_length is None:
            # By default generate up to the context (ContextLimitCriteria stops there); a pipeline then adds no
            # default length of its own (its 256 new tokens would overrun a short context).
            self.generation_config.max_new_tokens = config.max_position_embeddings
        self.post_init()

    def generation_context_limit(self) -> int | None:
        # Without memory, positions beyond max_position_embeddings have no embedding: generation stops there.
        return None if self.config.memory_length is not None else self.config.max_position_embeddings

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> HwlmCausalLMOutput:
        r"""
        Args:
            input_ids, attention_mask, cache, use_cache, inputs_embeds, position_ids, output_hidden_states,
                output_attentions: as in [`HwlmTransformerModel.forward`].
            labels (`torch.LongTensor` of shape `(B, T)`, *optional*): shifted inside the model; -100 is ignored.
            logits_to_keep (`int` or `torch.Tensor`, *optional*): logits for the last `n` positions only (0: all).
            shift_labels (`torch.LongTensor` of shape `(B, T)`, *optional*, keyword): targets already aligned with
                positions.
            num_items_in_batch (`int` or `torch.Tensor`, *optional*, keyword): divide the summed loss by this.
        """
        check_model_kwargs(self, kwargs)
        loss_kwargs = {k: kwargs.pop(k) for k in ("shift_labels", "num_items_in_batch") if k in kwargs}
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        features = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)  # (B, T', C)
        loss, logits = lm_head_outputs(self, features, labels, **loss_kwargs)
        return HwlmCausalLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class HwlmTransformerForSequenceClassification(HwlmTransformerPreTrainedModel):
    """
    The Transformer body with a linear classifier on the last real token's features, as GPT-2's classifier;
    `from_pretrained` on a causal-LM folder loads the body and initialises the classifier.
    """

    _new_head_prefixes = ("score.",)

    def __init__(self, config: HwlmTransformerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = HwlmTransformerModel(config)
        self.classifier_dropout = nn.Dropout(config.hidden_dropout)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ):
        r"""
        Args:
            input_ids, attention_mask, cache, use_cache, inputs_embeds, position_ids, output_hidden_states,
                output_attentions: as in [`HwlmTransformerModel.forward`]. Without `attention_mask`, tokens equal to
                `config.pad_token_id` are taken for padding.
            labels (`torch.LongTensor` of shape `(B,)`, *optional*): class ids (or float targets for regression /
                multi-label), as in transformers' classifiers.
        """
        check_model_kwargs(self, kwargs)
        attention_mask = padding_mask(input_ids, attention_mask, self.config.pad_token_id)
        if position_ids is None and attention_mask is not None and cache is None:
            # Count positions from each row's first real token, as generate() does, so left padding shifts nothing.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            **kwargs,
        )
        features = outputs.last_hidden_state  # (B, T, C)
        batch, time, _ = features.shape
        last = last_token_index(attention_mask, time, batch).to(features.device)
        return classification_outputs(self, features[torch.arange(batch, device=features.device), last], labels, outputs)


declare_causal_lm(HwlmTransformerConfig.model_type, HwlmTransformerForCausalLM.__name__)
