"""hwlm's model families. Each family's configuration and modeling files import only torch, transformers and
their siblings, so `save_pretrained` can copy them into a model folder (`trust_remote_code`)."""

from .configuration_lstm import HwlmLstmConfig
from .configuration_recurrent import HwlmRecurrentConfig
from .configuration_rnn import HwlmRnnConfig
from .configuration_transformer import HwlmTransformerConfig
from .modeling_common import HwlmCausalLMOutput
from .modeling_recurrent import HwlmLstmForCausalLM, HwlmRecurrentForCausalLM, HwlmRnnForCausalLM, RecurrentState
from .modeling_transformer import HwlmTransformerForCausalLM

#: (config class, causal LM class) for every model type hwlm registers.
MODEL_CLASSES = {
    "hwlm_rnn": (HwlmRnnConfig, HwlmRnnForCausalLM),
    "hwlm_lstm": (HwlmLstmConfig, HwlmLstmForCausalLM),
    "hwlm_transformer": (HwlmTransformerConfig, HwlmTransformerForCausalLM),
}

__all__ = [
    "MODEL_CLASSES",
    "HwlmCausalLMOutput",
    "HwlmLstmConfig",
    "HwlmLstmForCausalLM",
    "HwlmRecurrentConfig",
    "HwlmRecurrentForCausalLM",
    "HwlmRnnConfig",
    "HwlmRnnForCausalLM",
    "HwlmTransformerConfig",
    "HwlmTransformerForCausalLM",
    "RecurrentState",
]
