"""
hwlm's recurrent word-level language models: Elman RNN (tanh/ReLU), GRU and LSTM.

    input_ids ─► embedding ─► [embedding dropout, input dropout] ─► layer 1 ─► [hidden dropout] ─► ...
              ─► layer L ─► [output dropout] ─► (projection when tied with E != H) ─► output layer ─► logits

Each layer is one fused `nn.RNN` / `nn.GRU` / `nn.LSTM` module run over the whole sequence at once (cuDNN on GPU,
the fused CPU kernel otherwise): the regularisers of AWD-LSTM (Merity et al. 2018) are applied around those calls
or to the weights passed into them, never by a Python loop over time steps.

The recurrent state is the `cache`: it goes in, the final state comes out, so a training loop carries it across
consecutive windows (truncated BPTT, calling `state.detach()`) and `generate()` feeds only the newest token.

Shape legend: B batch, T time, E embedding size, H hidden size, V vocabulary size, L layers.
This file travels with saved models (`trust_remote_code`), so it imports only torch, transformers and siblings.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init

from .configuration_lstm import HwlmLstmConfig
from .configuration_recurrent import HwlmRecurrentConfig
from .configuration_rnn import HwlmRnnConfig
from .modeling_common import HwlmCausalLMOutput, HwlmCausalLMMixin, build_lm_head, check_token_ids, lm_head_outputs


class RecurrentState:
    """
    The state of a stacked recurrent LM between two calls: per layer, `(h,)` for RNN/GRU or `(h, c)` for LSTM,
    each tensor (B, H). The same object serves truncated BPTT (`detach()`) and generation (`reorder_cache()`).

    `generate()` treats it as a cache that needs only the new tokens: pass the tokens that follow the state, not
    the whole sequence again.
    """

    is_compileable = False

    def __init__(self, layers: Sequence[tuple[torch.Tensor, ...]], seen_tokens: int = 0):
        self.layers = [tuple(layer) for layer in layers]
        self.seen_tokens = seen_tokens

    @classmethod
    def zeros(cls, num_layers: int, tensors_per_layer: int, batch_size: int, hidden_size: int, like: torch.Tensor):
        """A zero state on the device and in the dtype of `like`."""
        return cls(
            [
                tuple(like.new_zeros(batch_size, hidden_size) for _ in range(tensors_per_layer))
                for _ in range(num_layers)
            ]
        )

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, layer_idx: int) -> tuple[torch.Tensor, ...]:
        return self.layers[layer_idx]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        return f"RecurrentState(layers={len(self)}, batch_size={self.batch_size}, seen_tokens={self.seen_tokens})"

    @property
    def batch_size(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def is_linear(self) -> list[bool]:
        # Read by `generate()`: a state, unlike a key/value cache, is never re-sliced against the prompt.
        return [True] * len(self.layers)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of tokens this state has consumed since it was zero."""
        return self.seen_tokens

    def detach(self) -> "RecurrentState":
        """A copy cut from the autograd graph: the truncation in truncated BPTT."""
        return RecurrentState([tuple(t.detach() for t in layer) for layer in self.layers], self.seen_tokens)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch in place (beam search): row i becomes old row `beam_idx[i]`."""
        self.layers = [tuple(t.index_select(0, beam_idx.to(t.device)) for t in layer) for layer in self.layers]


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
    if not torch.equal(contiguous, mask):
        raise ValueError(
            "attention_mask must mark one contiguous run of real tokens per row (left or right padding); "
            "got a mask with gaps. Recurrent models cannot skip tokens in the middle of a sequence: "
            "remove the padding between tokens or split the batch."
        )
    return starts, lengths


class HwlmRecurrentModel(nn.Module):
    """Embedding and stacked recurrent layers: (B, T) token ids → (B, T, D) features for the output layer."""

    def __init__(self, config: HwlmRecurrentConfig):
        super().__init__()
        self.config = config
        cell_type = config.cell_type
        self.state_tensors = 2 if cell_type == "lstm" else 1
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embedding_size)
        module = {"tanh": nn.RNN, "relu": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell_type]
        extra = {"nonlinearity": cell_type} if module is nn.RNN else {}
        # One module per layer (not one multi-layer module) so that variational dropout can act between layers.
        self.layers = nn.ModuleList(
            module(
                input_size=config.embedding_size if i == 0 else config.hidden_size,
                hidden_size=config.hidden_size,
                batch_first=True,
                **extra,
            )
            for i in range(config.num_hidden_layers)
        )
        # Tying needs the output layer's input width to equal the embedding width.
        needs_projection = config.tie_word_embeddings and config.embedding_size != config.hidden_size
        self.projection = nn.Linear(config.hidden_size, config.embedding_size, bias=False) if needs_projection else None
        self.output_size = config.embedding_size if needs_projection else config.hidden_size

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
            raise ValueError(
                f"`cache` does not fit this model: expected a RecurrentState with {len(self.layers)} layers of "
                f"{self.state_tensors} tensor(s) of shape {expected} (batch_size, hidden_size), got {got}. Pass the "
                "`cache` returned by the previous call on a batch of the same size, or `cache=None` to start from zeros."
            )

    def _run_layer(self, layer: nn.RNNBase, x, hx):
        """One fused recurrent call; with weight dropout the dropped `weight_hh` replaces the parameter for it."""
        p = self.config.weight_dropout
        if self.training and p > 0.0:
            dropped = {"weight_hh_l0": nn.functional.dropout(layer.weight_hh_l0, p=p, training=True)}
            return torch.func.functional_call(layer, dropped, (x, hx))
        return layer(x, hx)

    def forward(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        state: RecurrentState | None,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, RecurrentState, tuple[torch.Tensor, ...] | None]:
        config = self.config
        if inputs_embeds is None:
            x = self.embed_tokens(input_ids)  # (B, T, E)
            if self.training and config.embedding_dropout > 0.0:
                x = word_dropout(x, input_ids, config.vocab_size, config.embedding_dropout)
        else:
            x = inputs_embeds
        batch, time, _ = x.shape
        if state is None:
            state = RecurrentState.zeros(len(self.layers), self.state_tensors, batch, config.hidden_size, like=x)
        else:
            self._check_state(state, batch)
        all_hidden = [x] if output_hidden_states else None
        x = locked_dropout(x, config.input_dropout, self.training)

        # Padding: move each row's real tokens to the front and run them as packed sequences, so the final state
        # is the state after each row's last real token and pads never touch the state (fused kernels throughout).
        packed = None
        if attention_mask is not None:
            mask = attention_mask[:, -time:]  # generate() passes the mask of the whole sequence so far
            if not bool(mask.all()):
                starts, lengths = _padding_layout(mask)
                steps = torch.arange(time, device=x.device).unsqueeze(0)  # (1, T)
                gather_idx = (steps + starts[:, None]).clamp(max=time - 1)  # (B, T) aligned → original
                scatter_idx = (steps - starts[:, None]).clamp(min=0)  # (B, T) original → aligned
                packed = (gather_idx, scatter_idx, lengths)

        new_layers = []
        for i, layer in enumerate(self.layers):
            hx = tuple(t.unsqueeze(0).contiguous() for t in state[i])  # each (1, B, H)
            hx = hx if self.state_tensors == 2 else hx[0]
            if packed is None:
                out, hn = self._run_layer(layer, x, hx)  # out: (B, T, H)
            else:
                gather_idx, scatter_idx, lengths = packed
                aligned = x.gather(1, gather_idx.unsqueeze(-1).expand(-1, -1, x.size(-1)))  # (B, T, C)
                seq = pack_padded_sequence(aligned, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
                out, hn = self._run_layer(layer, seq, hx)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=time)  # (B, T, H), aligned
                out = out.gather(1, scatter_idx.unsqueeze(-1).expand(-1, -1, out.size(-1)))  # back to original
            hn = hn if isinstance(hn, tuple) else (hn,)
            layer_state = tuple(t.squeeze(0) for t in hn)  # each (B, H)
            if packed is not None:  # rows with no real token keep their incoming state
                empty = (packed[2] == 0).unsqueeze(-1)  # (B, 1)
                layer_state = tuple(torch.where(empty, old, new) for old, new in zip(state[i], layer_state))
            new_layers.append(layer_state)
            if all_hidden is not None:
                all_hidden.append(out)
            last = i == len(self.layers) - 1
            x = locked_dropout(out, config.output_dropout if last else config.hidden_dropout, self.training)

        if self.projection is not None:
            x = self.projection(x)  # (B, T, E)
        new_state = RecurrentState(new_layers, state.seen_tokens + time)
        return x, new_state, (tuple(all_hidden) if all_hidden is not None else None)


class HwlmRecurrentPreTrainedModel(HwlmCausalLMMixin, PreTrainedModel):
    """Weight initialisation and generation hooks shared by the recurrent hwlm models."""

    config_class = HwlmRecurrentConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    #: Capability flag read by training and evaluation code instead of the model type: the model returns a state
    #: that can be fed back with the following tokens (streams, truncated BPTT).
    supports_state_carrying = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The recurrent state is the cache; generate() must not build a key/value cache for us.
        return False

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


class HwlmRecurrentForCausalLM(HwlmRecurrentPreTrainedModel, GenerationMixin):
    """A recurrent causal LM; the concrete classes below bind it to a config and a cell type."""

    def __init__(self, config: HwlmRecurrentConfig):
        super().__init__(config)
        self.model = HwlmRecurrentModel(config)
        self.lm_head = build_lm_head(config, self.model.output_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: RecurrentState | None = None,
        use_cache: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        shift_labels: torch.LongTensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HwlmCausalLMOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): token ids in `[0, vocab_size)`.
            attention_mask (`torch.Tensor` of shape `(B, T)` or `(B, T_total)`, *optional*): 1 for real tokens,
                0 for padding (left or right). Padding never changes the state.
            labels (`torch.LongTensor` of shape `(B, T)`, *optional*): shifted inside the model (the label at
                t+1 is the target of position t); -100 is ignored.
            cache (`RecurrentState`, *optional*): the state after the previous tokens; zeros when `None`.
            use_cache (`bool`, *optional*): return the final state as `cache` (default `config.use_cache`).
            inputs_embeds (`torch.Tensor` of shape `(B, T, E)`, *optional*): instead of `input_ids`.
            logits_to_keep (`int` or `torch.Tensor`, *optional*): compute logits for the last `n` positions only
                (0: all), or for the positions in a 1-D index tensor.
            shift_labels (`torch.LongTensor` of shape `(B, T)`, *optional*): targets already aligned with the
                positions, as in transformers' `ForCausalLMLoss` (stream training: the target of the last position
                of a window is the first token of the next window).
            num_items_in_batch (`int` or `torch.Tensor`, *optional*): divide the summed loss by this instead of
                averaging (gradient accumulation over unequal batches).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            check_token_ids(input_ids, self.config.vocab_size)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        features, state, hidden_states = self.model(
            input_ids, inputs_embeds, attention_mask, cache, output_hidden_states=bool(output_hidden_states)
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        loss, logits = lm_head_outputs(self, features[:, keep], labels, shift_labels, num_items_in_batch)
        return HwlmCausalLMOutput(
            loss=loss, logits=logits, cache=state if use_cache else None, hidden_states=hidden_states
        )


class HwlmRnnForCausalLM(HwlmRecurrentForCausalLM):
    """Elman RNN (tanh or ReLU) or GRU word-level language model; see [`HwlmRnnConfig`]."""

    config_class = HwlmRnnConfig


class HwlmLstmForCausalLM(HwlmRecurrentForCausalLM):
    """LSTM word-level language model; see [`HwlmLstmConfig`]."""

    config_class = HwlmLstmConfig
