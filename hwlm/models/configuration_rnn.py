"""Configuration of `hwlm_rnn`: an Elman RNN (tanh or ReLU) or GRU word-level language model."""

from .config_checks import check_choice
from .configuration_recurrent import HwlmRecurrentConfig

RNN_CELL_TYPES = ("tanh", "relu", "gru")


class HwlmRnnConfig(HwlmRecurrentConfig):
    r"""
    Configuration of [`HwlmRnnForCausalLM`]: embedding → stacked `nn.RNN` (tanh/ReLU) or `nn.GRU` layers → output
    layer. Every field of [`HwlmRecurrentConfig`] applies (sizes, tying, the AWD-LSTM regularisers, token ids),
    plus:

    Args:
        cell_type (`str`, *optional*, defaults to `"tanh"`):
            The recurrent cell: `"tanh"` or `"relu"` for an Elman RNN (`torch.nn.RNN`), `"gru"` for a GRU
            (`torch.nn.GRU`).

    Example:

    ```python
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> import hwlm
    >>> config = AutoConfig.for_model("hwlm_rnn", vocab_size=100, hidden_size=32, cell_type="gru")
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "hwlm_rnn"

    cell_type: str = "tanh"

    def validate_hwlm(self) -> None:
        super().validate_hwlm()
        check_choice("cell_type", self.cell_type, RNN_CELL_TYPES)
