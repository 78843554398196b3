"""hwlm's model families. Each family's configuration and modeling files import only torch, transformers and
their siblings, so `save_pretrained` can copy them into a model folder (`trust_remote_code`)."""

from .configuration_lstm import HwlmLstmConfig
from .configuration_recurrent import HwlmRecurrentConfig
from .configuration_rnn import HwlmRnnConfig
from .configuration_transformer import HwlmTransformerConfig
from .modeling_common import HwlmCausalLMOutput
from .modeling_recurrent import (
    HwlmLstmForCausalLM,
    HwlmLstmForSequenceClassification,
    HwlmLstmModel,
    HwlmRecurrentForCausalLM,
    HwlmRecurrentForSequenceClassification,
    HwlmRecurrentModel,
    HwlmRecurrentPreTrainedModel,
    HwlmRnnForCausalLM,
    HwlmRnnForSequenceClassification,
    HwlmRnnModel,
    RecurrentState,
)
from .modeling_transformer import (
    HwlmTransformerForCausalLM,
    HwlmTransformerForSequenceClassification,
    HwlmTransformerModel,
    HwlmTransformerPreTrainedModel,
)

#: model type → (config class, {transformers Auto class name: model class}) for every model hwlm registers.
MODEL_CLASSES = {
    "hwlm_rnn": (
        HwlmRnnConfig,
        {
            "AutoModel": HwlmRnnModel,
            "AutoModelForCausalLM": HwlmRnnForCausalLM,
            "AutoModelForSequenceClassification": HwlmRnnForSequenceClassification,
        },
    ),
    "hwlm_lstm": (
        HwlmLstmConfig,
        {
            "AutoModel": HwlmLstmModel,
            "AutoModelForCausalLM": HwlmLstmForCausalLM,
            "AutoModelForSequenceClassification": HwlmLstmForSequenceClassification,
        },
    ),
    "hwlm_transformer": (
        HwlmTransformerConfig,
        {
            "AutoModel": HwlmTransformerModel,
            "AutoModelForCausalLM": HwlmTransformerForCausalLM,
            "AutoModelForSequenceClassification": HwlmTransformerForSequenceClassification,
        },
    ),
}

__all__ = [
    "MODEL_CLASSES",
    "HwlmCausalLMOutput",
    "HwlmLstmConfig",
    "HwlmLstmForCausalLM",
    "HwlmLstmForSequenceClassification",
    "HwlmLstmModel",
    "HwlmRecurrentConfig",
    "HwlmRecurrentForCausalLM",
    "HwlmRecurrentForSequenceClassification",
    "HwlmRecurrentModel",
    "HwlmRecurrentPreTrainedModel",
    "HwlmRnnConfig",
    "HwlmRnnForCausalLM",
    "HwlmRnnForSequenceClassification",
    "HwlmRnnModel",
    "HwlmTransformerConfig",
    "HwlmTransformerForCausalLM",
    "HwlmTransformerForSequenceClassification",
    "HwlmTransformerModel",
    "HwlmTransformerPreTrainedModel",
    "RecurrentState",
]
