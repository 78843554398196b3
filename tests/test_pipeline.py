"""A saved folder (model + hwlm tokenizer) works with transformers' text-generation pipeline."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

import hwlm  # noqa: F401
from hwlm.tokenization import train_word_tokenizer

TEXT = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog met on a mat"] * 4


@pytest.mark.parametrize("model_type", ["hwlm_rnn", "hwlm_lstm", "hwlm_transformer"])
def test_text_generation_pipeline_returns_correctly_spaced_text(model_type, tmp_path):
    tokenizer = train_word_tokenizer(TEXT)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    generator = pipeline("text-generation", model=str(tmp_path))
    full = generator("the cat", max_new_tokens=6, min_new_tokens=6, do_sample=False)[0]["generated_text"]
    new = generator("the cat", max_new_tokens=6, min_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert full == "the cat" + new
    assert full.startswith("the cat ") and "  " not in full
    words = full.split()
    assert len(words) > 2 and set(words) <= set(AutoTokenizer.from_pretrained(tmp_path).get_vocab())
