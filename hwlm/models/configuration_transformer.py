"""Configuration of `hwlm_transformer`: a causal, decoder-only Transformer word-level language model."""

from transformers import PreTrainedConfig

from .config_checks import (
    InvalidInput,
    update_from_string,
    check_choice,
    check_optional_positive_int,
    check_output_layer_and_token_ids,
    check_positive_float,
    check_positive_int,
    check_probability,
)

POSITION_EMBEDDING_TYPES = ("learned", "sinusoidal", "alibi")
HIDDEN_ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu")


class HwlmTransformerConfig(PreTrainedConfig):
    r"""
    Configuration of [`HwlmTransformerForCausalLM`], a GPT-style pre-LayerNorm decoder: every position attends only
    to itself and earlier positions. All arguments are keyword-only.

    Args:
        vocab_size (`int`, *optional*, defaults to 10000):
            Number of tokens in the vocabulary.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the embeddings and of every layer's residual stream.
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, *optional*):
            Width of the feed-forward block. Defaults to `4 * hidden_size`.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward block: `"gelu"`, `"gelu_new"`, `"relu"` or `"silu"`.
        max_position_embeddings (`int`, *optional*, defaults to 256):
            Longest sequence the model accepts (prompt plus generated tokens). A model with `memory_length` reads
            streams of any length and ignores it.
        position_embedding_type (`str`, *optional*, defaults to `"learned"`):
            `"learned"` (a trained table, as GPT-2), `"sinusoidal"` (fixed, as Vaswani et al. 2017) or `"alibi"` (no
            position embedding: each head adds `-slope * distance` to its attention scores, Press et al. 2022).
        memory_length (`int`, *optional*):
            Segment memory (Transformer-XL's recurrence, Dai et al. 2019): every position attends to itself and at
            most `memory_length` earlier positions, and the cache keeps exactly those keys and values per layer. In
            stream training and evaluation the cache is carried from window to window (detached), as a recurrent
            model's state is, so context crosses window boundaries. Needs `position_embedding_type="alibi"`:
            positions must enter only as distances for the memory to stay valid across windows. `None`: off.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the LayerNorms.
        embedding_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the sum of token and position embeddings.
        hidden_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the output of each attention and feed-forward block, before it joins the residual stream.
        attention_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the attention probabilities.
        attention_bias (`bool`, *optional*, defaults to `True`):
            Whether the query/key/value and output projections have biases.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Share the token embedding matrix with the output layer.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal distribution weights are drawn from (GPT-2's scheme; residual output
            projections are further scaled by `1/sqrt(2 * num_hidden_layers)`).
        adaptive_softmax_cutoffs (`list[int]`, *optional*):
            Use an adaptive softmax output layer (Grave et al. 2017) with these cluster boundaries. Cannot be
            combined with `tie_word_embeddings`.
        adaptive_softmax_div_value (`float`, *optional*, defaults to 4.0):
            Each adaptive-softmax tail cluster uses a projection `div_value` times narrower than the previous one.
        pad_token_id (`int`, *optional*):
            Id of the padding token.
        bos_token_id (`int`, *optional*):
            Id of the beginning-of-sequence token.
        eos_token_id (`int`, *optional*):
            Id of the end-of-sequence token.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the key/value cache so generation does not recompute the prefix.

    Example:

    ```python
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> import hwlm
    >>> config = AutoConfig.for_model("hwlm_transformer", vocab_size=100, hidden_size=32, num_attention_heads=4)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "hwlm_transformer"

    vocab_size: int = 10000
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int | None = None
    hidden_act: str = "gelu"
    max_position_embeddings: int = 256
    position_embedding_type: str = "learned"
    memory_length: int | None = None
    layer_norm_eps: float = 1e-5
    embedding_dropout: float = 0.0
    hidden_dropout: float = 0.0
    attention_dropout: float = 0.0
    attention_bias: bool = True
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
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
    def effective_intermediate_size(self) -> int:
        """`intermediate_size`, or 4 * hidden_size when it is `None`: derived when used, so changing `hidden_size` later
        (`from_pretrained(path, hidden_size=...)`, `--config_overrides`) changes it too."""
        return self.intermediate_size if self.intermediate_size is not None else 4 * self.hidden_size

    def update_from_string(self, update_str: str) -> None:
        """As transformers', and optional fields (`None` by default) take a value too; see `config_checks`."""
        update_from_string(self, update_str, super().update_from_string)

    def validate_hwlm(self) -> None:
        """Check every field; raise `ValueError` naming the field, the value and what is allowed."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings"):
            check_positive_int(name, getattr(self, name))
        check_optional_positive_int("intermediate_size", self.intermediate_size)
        if self.hidden_size % self.num_attention_heads != 0:
            raise InvalidInput(
                f"`num_attention_heads` ({self.num_attention_heads}) must divide `hidden_size` ({self.hidden_size}); "
                f"pick a head count such as {_divisors_hint(self.hidden_size)}."
            )
        check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        check_optional_positive_int("memory_length", self.memory_length)
        if self.memory_length is not None and self.position_embedding_type != "alibi":
            raise InvalidInput(
                f"memory_length={self.memory_length} needs position_embedding_type='alibi', got "
                f"{self.position_embedding_type!r}: with a memory carried across windows, absolute positions would "
                "restart at 0 in every window. Set position_embedding_type='alibi' or drop memory_length."
            )
        check_choice("hidden_act", self.hidden_act, HIDDEN_ACTIVATIONS)
        for name in ("embedding_dropout", "hidden_dropout", "attention_dropout"):
            check_probability(name, getattr(self, name))
        check_positive_float("layer_norm_eps", self.layer_norm_eps)
        check_positive_float("initializer_range", self.initializer_range)
        check_output_layer_and_token_ids(self)


    @property
    def sliding_window(self) -> int | None:
        """The attention span transformers' masks and caches read: the position itself plus `memory_length`."""
        return self.memory_length + 1 if self.memory_length is not None else None


def _divisors_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 16) + 1) if n % d == 0)
