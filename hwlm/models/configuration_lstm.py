"""Configuration of `hwlm_lstm`: an LSTM word-level language model."""

from .configuration_recurrent import HwlmRecurrentConfig


class HwlmLstmConfig(HwlmRecurrentConfig):
    r"""
    Configuration of [`HwlmLstmForCausalLM`]: embedding → stacked `nn.LSTM` layers → output layer, with the
    AWD-LSTM regularisers (Merity et al. 2018) as options. Every field is documented on [`HwlmRecurrentConfig`].

    The defaults are the "small" model of Zaremba et al. (2014): 2 layers of 200 units, no dropout, weights
    uniform in [-0.1, 0.1].

    Example:

    ```python
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> import hwlm
    >>> config = AutoConfig.for_model("hwlm_lstm", vocab_size=100, hidden_size=32, num_hidden_layers=2)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "hwlm_lstm"
    # A class constant, not a field (no annotation): an LSTM has one kind of cell. The modeling code reads
    # `config.cell_type` for every recurrent family.
    cell_type = "lstm"
