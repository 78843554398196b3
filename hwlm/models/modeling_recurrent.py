"""
hwlm's recurrent word-level language models: Elman RNN (tanh/ReLU), GRU and LSTM.

    input_ids ─► embedding ─► [embedding dropout, input dropout] ─► layer 1 ─► [hidden dropout] ─► ...
              ─► layer L ─► [output dropout] ─► (projection when tied with E != H) ─► output layer ─► logits

Each layer is one fused `nn.RNN` / `nn.GRU` / `nn.LSTM` module run over the whole sequence at once (cuDNN on GPU,
the fused CPU kernel otherwise): the regularisers of AWD-LSTM (Merity et al. 2018) are applied around those calls
or to the weights passed into them, never by a Python loop over time steps.

The recurrent state is the `cache`: it goes in, the final state comes out, so a training loop carries it across
consecutive windows (truncated BPTT, calling `state.detach()`) and `generate()` feeds only the newest token.

The classes follow transformers' layout: `HwlmRecurrentPreTrainedModel` (weights, capabilities) →
`HwlmRecurrentModel` (the body, `AutoModel`: embedding and layers → `last_hidden_state`) → `...ForCausalLM` (body +
output layer) and `...ForSequenceClassification` (body + ULMFiT concat pooling + a linear classifier), each bound to
the RNN/GRU or the LSTM config by the thin classes at the end of the file.

Shape legend: B batch, T time, E embedding size, H hidden size, V vocabulary size, L layers.
This file travels with saved models (`trust_remote_code`), so it imports only torch, transformers and siblings.
It is over 500 lines on purpose: one modeling file per family, as transformers' own `models/<name>/`, read top to
bottom (state cache, regularisers, body, heads); splitting it would scatter what a saved folder's reader needs.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils import _pytree as pytree
from transformers import Cache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import CacheLayerMixin
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .config_checks import InvalidInput
from .configuration_lstm import HwlmLstmConfig
from .configuration_recurrent import HwlmRecurrentConfig
from .configuration_rnn import HwlmRnnConfig
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


class RecurrentLayer(CacheLayerMixin):
    """
    One layer's running state in a transformers `Cache`: `(h,)` for RNN/GRU or `(h, c)` for LSTM, each (B, H), and
    the number of tokens it has consumed. Unlike a key/value layer it holds no per-token history, so it cannot be
    cropped back to an earlier token (`is_croppable = False`): transformers then refuses what needs that rewind
    (assisted decoding), as for any cache that cannot roll back.
    """

    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self, states: Sequence[torch.Tensor] = (), seen_tokens: int = 0):
        super().__init__()
        self.states = tuple(states)
        self.seen_tokens = seen_tokens
        self.is_initialized = bool(self.states)

    def __repr__(self) -> str:
        shapes = [tuple(t.shape) for t in self.states]
        return f"RecurrentLayer(states={shapes}, seen_tokens={self.seen_tokens})"

    @property
    def device(self) -> torch.device | None:
        return self.states[0].device if self.states else None

    def lazy_initialization(self, *states: torch.Tensor) -> None:
        self.states, self.is_initialized = tuple(states), True

    def update(self, *states: torch.Tensor, num_tokens: int = 0) -> tuple[torch.Tensor, ...]:
        """Replace the state by the one after `num_tokens` more tokens; the tensors are rebound, never written into,
        so a state still needed by autograd (truncated BPTT) stays intact."""
        self.lazy_initialization(*states)
        self.seen_tokens += num_tokens
        return self.states

    def get_seq_length(self) -> int:
        return self.seen_tokens

    def get_max_length(self) -> int:
        return -1  # a running state has no length limit

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0  # nothing cached to attend to

    def reset(self) -> None:
        self.states = tuple(torch.zeros_like(t) for t in self.states)
        self.seen_tokens = 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove:
            raise RuntimeError(
                "A recurrent state cannot be cropped: it keeps no per-token history to roll back to (is_croppable=False)."
            )

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.states = tuple(t.index_select(0, beam_idx.to(t.device)) for t in self.states)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.states = tuple(t.repeat_interleave(repeats, dim=0) for t in self.states)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.states = tuple(t[indices, ...] for t in self.states)

    def offload(self) -> None:
        self.states = tuple(t.to("cpu", non_blocking=True) for t in self.states)

    def prefetch(self) -> None:
        pass  # offloading is for key/value caches; a state is small and stays where it is


class RecurrentState(Cache):
    """
    The state of a stacked recurrent LM between two calls, as a transformers `Cache` of `RecurrentLayer`s: per layer,
    `(h,)` for RNN/GRU or `(h, c)` for LSTM, each (B, H). The same object serves truncated BPTT (`detach()`),
    generation (`generate()` feeds only the new tokens; `reorder_cache()` for beams) and checkpoints (a pytree node).

    A state is a value: the forward never changes the state it is given, it returns the state after the new tokens
    as a new object (so `before = model(a).cache; after = model(b, cache=before).cache` keeps both), and `detach()`
    returns a detached copy, as `torch.Tensor.detach` does.
    """

    def __init__(self, layers: Sequence[Sequence[torch.Tensor]] = (), seen_tokens: int = 0):
        super().__init__(layers=[RecurrentLayer(states, seen_tokens) for states in layers])

    @classmethod
    def zeros(cls, num_layers: int, tensors_per_layer: int, batch_size: int, hidden_size: int, like: torch.Tensor):
        """A zero state on the device and in the dtype of `like`."""
        return cls(
            [
                tuple(like.new_zeros(batch_size, hidden_size) for _ in range(tensors_per_layer))
                for _ in range(num_layers)
            ]
        )

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, ...]:
        return self.layers[layer_idx].states

    def __iter__(self):
        return (layer.states for layer in self.layers)

    def __repr__(self) -> str:
        size = self.batch_size if self.layers else 0
        return f"RecurrentState(layers={len(self)}, batch_size={size}, seen_tokens={self.get_seq_length()})"

    @property
    def batch_size(self) -> int:
        return self.layers[0].states[0].shape[0]

    def detach(self) -> "RecurrentState":
        """A copy cut from the autograd graph (the truncation of truncated BPTT); this state is left as it is."""
        return RecurrentState([tuple(t.detach() for t in states) for states in self], self.get_seq_length())


@dataclass
class HwlmRecurrentModelOutput(BaseModelOutputWithPast):
    """
    The body's output: transformers' `BaseModelOutputWithPast` (`last_hidden_state`, `cache`, `hidden_states`) and

    Args:
        activation_penalty (`torch.FloatTensor` of shape `()`, *optional*):
            In training, with `activation_regularization` or `temporal_activation_regularization` set: AR + TAR of
            the last layer (see [`HwlmRecurrentConfig`]), a mean over the real positions. The causal LM adds it to its
            loss.
    """

    activation_penalty: torch.FloatTensor | None = None


def _flatten_state(state: RecurrentState):
    return [t for layer in state.layers for t in layer.states], (len(state.layers), state.get_seq_length())


def _unflatten_state(leaves, context) -> RecurrentState:
    num_layers, seen_tokens = context
    per_layer = len(leaves) // num_layers
    return RecurrentState([tuple(leaves[i * per_layer : (i + 1) * per_layer]) for i in range(num_layers)], seen_tokens)


# A pytree node, so `torch.export` and `torch.compile` can take and return a state (its tensors are the leaves).
pytree.register_pytree_node(RecurrentState, _flatten_state, _unflatten_state, serialized_type_name=f"{__name__}.RecurrentState")


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence, shared by all time steps. x: (B, T, C)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)  # (B, 1, C)
    return x * mask


def word_dropout(embeddings: torch.Tensor, input_ids: torch.LongTensor, vocab_size: int, p: float) -> torch.Tensor:
    """Drop whole word types (AWD-LSTM's embedding dropout): every occurrence of a dropped word is zeroed."""
    keep = embeddings.new_empty(vocab_size).bernoulli_(1.0 - p) / (1.0 - p)  # (V,)
    return embeddings * keep[input_ids].unsqueeze(-1)  # (B, T, E)


def _padding_layout(mask: torch.Tensor) -> tuple[torch.LongTensor, torch.LongTensor]:
    """
    Start and length of the run of real tokens in each row of a (B, T) 0/1 mask. Left and right padding are both
    supported; a mask with holes cannot be expressed as one packed sequence per row and is rejected.
    """
    mask = mask.bool()
    batch, time = mask.shape
    lengths = mask.sum(dim=1)  # (B,)
    starts = torch.where(lengths > 0, mask.int().argmax(dim=1), torch.zeros_like(lengths))  # (B,)
    positions = torch.arange(time, device=mask.device).unsqueeze(0)  # (1, T)
    contiguous = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])  # (B, T)
    if not is_tracing() and not torch.equal(contiguous, mask):
        raise InvalidInput(
            "attention_mask must mark one contiguous run of real tokens per row (left or right padding); "
            "got a mask with gaps. Recurrent models cannot skip tokens in the middle of a sequence: "
            "remove the padding between tokens or split the batch."
        )
    return starts, lengths



class HwlmRecurrentPreTrainedModel(HwlmStrictLoadingMixin, PreTrainedModel):
    """Weight initialisation and the capabilities every recurrent hwlm model declares to transformers."""

    config_class = HwlmRecurrentConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    #: hwlm's capability (read through `hwlm.model_building.supports_state_carrying`): the `cache` a forward returns
    #: continues a stream, so training and evaluation carry it from one window to the next (truncated BPTT).
    #: What transformers must refuse (assisted decoding, which rewinds the cache) follows from the cache itself:
    #: its `RecurrentLayer`s are not croppable.
    carries_state = True

    def _init_weights(self, module: nn.Module) -> None:
        # Zaremba et al. (2014): every weight uniform in [-r, r]; biases start at zero.
        r = self.config.initializer_range
        if isinstance(module, (nn.Embedding, nn.Linear)):
            init.uniform_(module.weight, -r, r)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    init.uniform_(param, -r, r)
                else:
                    init.zeros_(param)


class HwlmRecurrentModel(HwlmRecurrentPreTrainedModel):
    """
    The body: embedding and stacked recurrent layers, (B, T) token ids → (B, T, D) `last_hidden_state`, the features
    the output layer reads (D = E when a tied model projects H → E, else H).
    """

    def __init__(self, config: HwlmRecurrentConfig):
        super().__init__(config)
        cell_type = config.cell_type
        self.state_tensors = 2 if cell_type == "lstm" else 1
        embedding_size = config.effective_embedding_size
        self.embed_tokens = nn.Embedding(config.vocab_size, embedding_size)
        module = {"tanh": nn.RNN, "relu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell_type]
        extra = {"nonlinearity": cell_type} if module is nn.RNN else {}
        # One module per layer (not one multi-layer module) so that variational dropout can act between layers.
        self.layers = nn.ModuleList(
            module(
                input_size=embedding_size if i == 0 else config.hidden_size,
                hidden_size=config.hidden_size,
                batch_first=True,
                **extra,
            )
            for i in range(config.num_hidden_layers)
        )
        # Tying needs the output layer's input width to equal the embedding width.
        needs_projection = config.tie_word_embeddings and embedding_size != config.hidden_size
        self.projection = nn.Linear(config.hidden_size, embedding_size, bias=False) if needs_projection else None
        self.output_size = embedding_size if needs_projection else config.hidden_size
        self.gradient_checkpointing = False
        self.post_init()

    def _check_state(self, state: RecurrentState, batch_size: int) -> None:
        expected = (batch_size, self.config.hidden_size)
        if not isinstance(state, RecurrentState) or len(state) != len(self.layers) or any(
            len(layer) != self.state_tensors or any(tuple(t.shape) != expected for t in layer) for layer in state
        ):
            got = (
                [tuple(tuple(t.shape) for t in layer) for layer in state]
                if isinstance(state, RecurrentState)
                else type(state).__name__
            )
            raise InvalidInput(
                f"`cache` does not fit this model: expected a RecurrentState with {len(self.layers)} layers of "
                f"{self.state_tensors} tensor(s) of shape {expected} (batch_size, hidden_size), got {got}. Pass the "
                "`cache` returned by the previous call on a batch of the same size, or `cache=None` to start from zeros."
            )

    @staticmethod
    def _is_empty(cache) -> bool:
        """No state yet: `None`, or a transformers `Cache` that has seen no token (e.g. the `DynamicCache` that
        `generate()` prepares before the first step)."""
        return cache is None or (
            isinstance(cache, Cache) and not isinstance(cache, RecurrentState) and cache.get_seq_length() == 0
        )

    def _embed(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        if inputs_embeds is not None:
            return inputs_embeds
        x = self.embed_tokens(input_ids)  # (B, T, E)
        if self.training and self.config.embedding_dropout > 0.0:
            x = word_dropout(x, input_ids, self.config.vocab_size, self.config.embedding_dropout)
        return x

    def _run_layer(self, i: int, x: torch.Tensor, hx: tuple[torch.Tensor, ...], packing) -> tuple[torch.Tensor, ...]:
        """
        Layer `i` over the whole window in one fused call: x (B, T, C), hx per state tensor (B, H) →
        (out (B, T, H), *final state tensors (B, H)). With weight dropout the dropped `weight_hh` replaces the
        parameter for this call; under activation checkpointing the recomputation restores the RNG state, so it
        draws the same mask.
        """
        layer = self.layers[i]
        hx = tuple(t.unsqueeze(0).contiguous() for t in hx)  # each (1, B, H)
        hx = hx if self.state_tensors == 2 else hx[0]
        p = self.config.weight_dropout
        if self.training and p > 0.0:
            dropped = {"weight_hh_l0": nn.functional.dropout(layer.weight_hh_l0, p=p, training=True)}

            def run(inputs, state):
                return torch.func.functional_call(layer, dropped, (inputs, state))
        else:
            run = layer
        if packing is None:
            out, hn = run(x, hx)  # out: (B, T, H)
        else:
            # Each row's real tokens moved to the front and run as a packed sequence: pads never touch the state.
            gather_idx, scatter_idx, lengths = packing
            time = x.size(1)
            aligned = x.gather(1, gather_idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))  # (B, T, C)
            seq = pack_padded_sequence(aligned, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            out, hn = run(seq, hx)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=time)  # (B, T, H), aligned
            out = out.gather(1, scatter_idx.unsqueeze(-1).expand(-1, -1, out.size(-1)))  # back to original
        hn = hn if isinstance(hn, tuple) else (hn,)
        return (out, *(t.squeeze(0) for t in hn))  # out (B, T, H), each state tensor (B, H)

    @staticmethod
    def _packing(attention_mask: torch.Tensor | None, time: int):
        """Gather/scatter indices and lengths for padded rows, or None when every position is real."""
        if attention_mask is None:
            return None
        mask = attention_mask[:, -time:]  # generate() passes the mask of the whole sequence so far
        if not is_tracing() and bool(mask.all()):
            return None
        starts, lengths = _padding_layout(mask)
        steps = torch.arange(time, device=mask.device).unsqueeze(0)  # (1, T)
        gather_idx = (steps + starts[:, None]).clamp(max=time - 1)  # (B, T) aligned → original
        scatter_idx = (steps - starts[:, None]).clamp(min=0)  # (B, T) original → aligned
        return gather_idx, scatter_idx, lengths

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: RecurrentState | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> HwlmRecurrentModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): token ids in `[0, vocab_size)`.
            attention_mask (`torch.Tensor` of shape `(B, T)` or `(B, T_total)`, *optional*): 1 for real tokens,
                0 for padding (left or right). Padding never changes the state.
            cache (`RecurrentState`, *optional*): the state after the previous tokens; zeros when `None`.
                `past_key_values` is accepted as its deprecated name, as in transformers' models.
            use_cache (`bool`, *optional*): return the final state as `cache` (default `config.use_cache`).
            inputs_embeds (`torch.Tensor` of shape `(B, T, E)`, *optional*): instead of `input_ids`.
            output_hidden_states (`bool`, *optional*): also return the embedding output and every layer's output;
                the last entry is `last_hidden_state` (after the output dropout and projection the head reads).
        """
        check_model_kwargs(self, kwargs)
        if (input_ids is None) == (inputs_embeds is None):
            raise InvalidInput("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            check_token_ids(input_ids, self.config.vocab_size)
        config = self.config
        use_cache = config.use_cache if use_cache is None else use_cache
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        x = self._embed(input_ids, inputs_embeds)  # (B, T, E)
        batch, time, _ = x.shape
        if self._is_empty(cache):
            cache = RecurrentState.zeros(len(self.layers), self.state_tensors, batch, config.hidden_size, like=x)
        else:
            self._check_state(cache, batch)
        all_hidden = [x] if output_hidden_states else None
        x = locked_dropout(x, config.input_dropout, self.training)
        packing = self._packing(attention_mask, time)
        run_layer = self._run_layer
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # Per layer: keep only each layer's input and recompute its activations in the backward pass.
            def run_layer(*args):
                return self._gradient_checkpointing_func(self._run_layer, *args)

        new_layers = []
        for i in range(len(self.layers)):
            out, *layer_state = run_layer(i, x, cache[i], packing)
            if packing is not None:  # rows with no real token keep their incoming state
                empty = (packing[2] == 0).unsqueeze(-1)  # (B, 1)
                layer_state = [torch.where(empty, old, new) for old, new in zip(cache[i], layer_state)]
            new_layers.append(layer_state)
            last = i == len(self.layers) - 1
            x = locked_dropout(out, config.output_dropout if last else config.hidden_dropout, self.training)
            if all_hidden is not None and not last:
                all_hidden.append(out)
        penalty = self._activation_penalty(out, x, attention_mask) if self.training else None
        if self.projection is not None:
            x = self.projection(x)  # (B, T, E)
        if all_hidden is not None:
            all_hidden.append(x)  # what the output layer reads, as transformers' models do
        return HwlmRecurrentModelOutput(
            last_hidden_state=x,
            cache=RecurrentState(new_layers, cache.get_seq_length() + time) if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            activation_penalty=penalty,
        )

    def _activation_penalty(self, raw: torch.Tensor, dropped: torch.Tensor, attention_mask) -> torch.Tensor | None:
        """
        AWD-LSTM's AR + TAR of the last layer: `alpha * mean(dropped²) + beta * mean((raw_t - raw_{t-1})²)` over the
        real positions (pairs of real positions for TAR). raw, dropped (B, T, H); None when both weights are 0.
        """
        alpha, beta = self.config.activation_regularization, self.config.temporal_activation_regularization
        if not alpha and not beta:
            return None
        batch, time, _ = raw.shape
        real = (
            attention_mask[:, -time:].to(raw.dtype) if attention_mask is not None else raw.new_ones(batch, time)
        )  # (B, T)
        penalty = raw.new_zeros(())
        if alpha:
            penalty = penalty + alpha * (dropped.pow(2).mean(-1) * real).sum() / real.sum().clamp(min=1)
        if beta and time > 1:
            pairs = real[:, 1:] * real[:, :-1]  # (B, T-1)
            steps = (raw[:, 1:] - raw[:, :-1]).pow(2).mean(-1)  # (B, T-1)
            penalty = penalty + beta * (steps * pairs).sum() / pairs.sum().clamp(min=1)
        return penalty


class HwlmRecurrentForCausalLM(HwlmCausalLMMixin, HwlmGenerationMixin, HwlmRecurrentPreTrainedModel, GenerationMixin):
    """A recurrent causal LM: the body and an output layer. The classes below bind it to a config and a cell type."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    body_class = HwlmRecurrentModel

    def __init__(self, config: HwlmRecurrentConfig):
        super().__init__(config)
        self.model = self.body_class(config)
        self.lm_head = build_lm_head(config, self.model.output_size)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: RecurrentState | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> HwlmCausalLMOutput:
        r"""
        Args:
            input_ids, attention_mask, cache, use_cache, inputs_embeds, output_hidden_states: as in
                [`HwlmRecurrentModel.forward`].
            labels (`torch.LongTensor` of shape `(B, T)`, *optional*): shifted inside the model (the label at
                t+1 is the target of position t); -100 is ignored.
            logits_to_keep (`int` or `torch.Tensor`, *optional*): compute logits for the last `n` positions only
                (0: all), or for the positions in a 1-D index tensor.
            shift_labels (`torch.LongTensor` of shape `(B, T)`, *optional*, keyword): targets already aligned with
                the positions, as in transformers' `ForCausalLMLoss` (stream training: the target of the last
                position of a window is the first token of the next window).
            num_items_in_batch (`int` or `torch.Tensor`, *optional*, keyword): divide the summed loss by this
                instead of averaging (gradient accumulation over unequal batches).
        """
        check_model_kwargs(self, kwargs)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        features = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)  # (B, T', D)
        loss, logits = lm_head_outputs(self, features, labels, **kwargs)
        if loss is not None and outputs.activation_penalty is not None:
            loss = loss + outputs.activation_penalty * self._penalty_share(labels, kwargs)
        return HwlmCausalLMOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)

    @staticmethod
    def _penalty_share(labels, kwargs) -> torch.Tensor | float:
        """
        With `num_items_in_batch` (gradient accumulation: each micro-batch's loss is its summed loss over the whole
        step's tokens), the penalty of this micro-batch is weighted by its share of the step's tokens, so the step
        adds one penalty over all its tokens, as a single batch would.
        """
        total = kwargs.get("num_items_in_batch")
        if total is None:
            return 1.0
        targets = kwargs.get("shift_labels")
        targets = targets if targets is not None else labels[:, 1:]
        return (targets != -100).sum() / total


class HwlmRecurrentForSequenceClassification(HwlmRecurrentPreTrainedModel):
    """
    A recurrent classifier in the manner of ULMFiT (Howard & Ruder 2018): the pretrained body, then concat pooling
    of the last real token's features, their maximum and their mean over the real tokens (B, 3D), dropout and a
    linear layer. `from_pretrained` on a causal-LM folder loads the body and initialises the classifier.
    """

    body_class = HwlmRecurrentModel
    _new_head_prefixes = ("score.",)

    def __init__(self, config: HwlmRecurrentConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = self.body_class(config)
        self.classifier_dropout = nn.Dropout(config.output_dropout)
        self.score = nn.Linear(3 * self.model.output_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: RecurrentState | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ):
        r"""
        Args:
            input_ids, attention_mask, cache, use_cache, inputs_embeds, output_hidden_states: as in
                [`HwlmRecurrentModel.forward`]. Without `attention_mask`, tokens equal to `config.pad_token_id`
                are taken for padding.
            labels (`torch.LongTensor` of shape `(B,)`, *optional*): class ids (or float targets for
                regression / multi-label), as in transformers' classifiers.
        """
        check_model_kwargs(self, kwargs)
        attention_mask = padding_mask(input_ids, attention_mask, self.config.pad_token_id)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=use_cache,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        features = outputs.last_hidden_state  # (B, T, D)
        batch, time, _ = features.shape
        real = (
            attention_mask[:, -time:].bool().unsqueeze(-1)
            if attention_mask is not None
            else features.new_ones(batch, time, 1, dtype=torch.bool)
        )  # (B, T, 1)
        last = features[torch.arange(batch, device=features.device), last_token_index(attention_mask, time, batch)]
        largest = features.masked_fill(~real, torch.finfo(features.dtype).min).amax(dim=1)  # (B, D)
        mean = (features * real).sum(dim=1) / real.sum(dim=1).clamp(min=1)  # (B, D)
        return classification_outputs(self, torch.cat([last, largest, mean], dim=-1), labels, outputs)


class HwlmRnnModel(HwlmRecurrentModel):
    """The Elman RNN / GRU body (`AutoModel`); see [`HwlmRecurrentModel`]."""

    config_class = HwlmRnnConfig


class HwlmRnnForCausalLM(HwlmRecurrentForCausalLM):
    """Elman RNN (tanh or ReLU) or GRU word-level language model; see [`HwlmRnnConfig`]."""

    config_class = HwlmRnnConfig
    body_class = HwlmRnnModel


class HwlmRnnForSequenceClassification(HwlmRecurrentForSequenceClassification):
    """Elman RNN / GRU classifier on a pretrained language model's body; see [`HwlmRecurrentForSequenceClassification`]."""

    config_class = HwlmRnnConfig
    body_class = HwlmRnnModel


class HwlmLstmModel(HwlmRecurrentModel):
    """The LSTM body (`AutoModel`); see [`HwlmRecurrentModel`]."""

    config_class = HwlmLstmConfig


class HwlmLstmForCausalLM(HwlmRecurrentForCausalLM):
    """LSTM word-level language model; see [`HwlmLstmConfig`]."""

    config_class = HwlmLstmConfig
    body_class = HwlmLstmModel


class HwlmLstmForSequenceClassification(HwlmRecurrentForSequenceClassification):
    """LSTM classifier on a pretrained language model's body; see [`HwlmRecurrentForSequenceClassification`]."""

    config_class = HwlmLstmConfig
    body_class = HwlmLstmModel


declare_causal_lm(HwlmRnnConfig.model_type, HwlmRnnForCausalLM.__name__)
declare_causal_lm(HwlmLstmConfig.model_type, HwlmLstmForCausalLM.__name__)
