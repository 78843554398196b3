"""Configuration shared by hwlm's recurrent language models (`hwlm_rnn`, `hwlm_lstm`)."""

from transformers import PreTrainedConfig

from .config_checks import (
    update_from_string,
    check_non_negative_float,
    check_optional_positive_int,
    check_output_layer_and_token_ids,
    check_positive_float,
    check_positive_int,
    check_probability,
)


class HwlmRecurrentConfig(PreTrainedConfig):
    r"""
    Fields shared by every recurrent hwlm model. Not used on its own: see [`HwlmRnnConfig`] and
    [`HwlmLstmConfig`]. All arguments are keyword-only.

    Args:
        vocab_size (`int`, *optional*, defaults to 10000):
            Number of tokens in the vocabulary (rows of the embedding, columns of the output layer).
        embedding_size (`int`, *optional*):
            Width of the word embeddings. Defaults to `hidden_size`. When it differs from `hidden_size` and
            `tie_word_embeddings` is set, a linear projection from `hidden_size` to `embedding_size` sits before
            the (tied) output layer.
        hidden_size (`int`, *optional*, defaults to 200):
            Number of units in each recurrent layer.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of stacked recurrent layers.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Share the input embedding matrix with the output layer (Press & Wolf 2017, Inan et al. 2017).
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Probability of dropping a whole word type from the embedding matrix for a batch (every occurrence of
            that word in the batch becomes a zero vector), AWD-LSTM's `dropoute`.
        input_dropout (`float`, *optional*, defaults to 0.0):
            Variational (locked) dropout on the embeddings fed to the first layer: one mask per sequence, shared by
            every time step. AWD-LSTM's `dropouti`.
        hidden_dropout (`float`, *optional*, defaults to 0.0):
            Variational dropout on the outputs of every layer but the last, i.e. between layers. AWD-LSTM's
            `dropouth`.
        output_dropout (`float`, *optional*, defaults to 0.0):
            Variational dropout on the output of the last layer, before the output layer. AWD-LSTM's `dropout`.
        weight_dropout (`float`, *optional*, defaults to 0.0):
            DropConnect on the hidden-to-hidden weight matrices (`weight_hh`), one mask per forward call. The
            fused PyTorch kernels still run: the dropped matrix is passed in place of the parameter. AWD-LSTM's
            `wdrop`.
        activation_regularization (`float`, *optional*, defaults to 0.0):
            Activation regularisation (AR, Merity et al. 2017, arXiv:1708.01009; AWD-LSTM's `alpha`, 2 there): in
            training, adds this times the mean square of the last layer's output *after* the output dropout to the
            loss, keeping activations small.
        temporal_activation_regularization (`float`, *optional*, defaults to 0.0):
            Temporal activation regularisation (TAR; AWD-LSTM's `beta`, 1 there): in training, adds this times the
            mean square of the change of the last layer's output from one time step to the next (before dropout)
            to the loss, keeping the state slow-moving.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Half-width of the uniform distribution every weight is drawn from, as in Zaremba et al. (2014). Biases
            start at zero.
        adaptive_softmax_cutoffs (`list[int]`, *optional*):
            Use an adaptive softmax output layer (Grave et al. 2017) with these cluster boundaries instead of the
            full softmax, e.g. `[2000, 10000]` for a 33k vocabulary. Tokens should be ordered by decreasing
            frequency (the hwlm tokenizer does this). Cannot be combined with `tie_word_embeddings`.
        adaptive_softmax_div_value (`float`, *optional*, defaults to 4.0):
            Each adaptive-softmax tail cluster uses a projection `div_value` times narrower than the previous one.
        pad_token_id (`int`, *optional*):
            Id of the padding token.
        bos_token_id (`int`, *optional*):
            Id of the beginning-of-sequence token (word-level corpora usually have none).
        eos_token_id (`int`, *optional*):
            Id of the end-of-sequence token (`<eos>`, appended to every line of the corpus).
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the final recurrent state as `cache` so it can be fed back (generation, truncated BPTT).
    """

    vocab_size: int = 10000
    embedding_size: int | None = None
    hidden_size: int = 200
    num_hidden_layers: int = 2
    tie_word_embeddings: bool = False
    embedding_dropout: float = 0.0
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    output_dropout: float = 0.0
    weight_dropout: float = 0.0
    activation_regularization: float = 0.0
    temporal_activation_regularization: float = 0.0
    initializer_range: float = 0.1
    adaptive_softmax_cutoffs: list[int] | None = None
    adaptive_softmax_div_value: float = 4.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_hwlm()

    @property
    def effective_embedding_size(self) -> int:
        """`embedding_size`, or hidden_size when it is `None`: derived when used, so changing `hidden_size` later
        (`from_pretrained(path, hidden_size=...)`, `--config_overrides`) changes it too."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    def update_from_string(self, update_str: str) -> None:
        """As transformers', and optional fields (`None` by default) take a value too; see `config_checks`."""
        update_from_string(self, update_str, super().update_from_string)

    def validate_hwlm(self) -> None:
        """Check every field; raise `ValueError` naming the field, the value and what is allowed."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            check_positive_int(name, getattr(self, name))
        check_optional_positive_int("embedding_size", self.embedding_size)
        for name in ("embedding_dropout", "input_dropout", "hidden_dropout", "output_dropout", "weight_dropout"):
            check_probability(name, getattr(self, name))
        check_non_negative_float("activation_regularization", self.activation_regularization)
        check_non_negative_float("temporal_activation_regularization", self.temporal_activation_regularization)
        check_positive_float("initializer_range", self.initializer_range)
        check_output_layer_and_token_ids(self)
