"""hwlm: word-level RNN, LSTM and Transformer language models for the Hugging Face stack."""

__version__ = "0.1.0"
