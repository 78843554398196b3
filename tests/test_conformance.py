"""
The Hugging Face contract: whatever a user does with `GPT2LMHeadModel` works with every hwlm family, or is refused
by transformers itself because of what the model's cache is (a recurrent state cannot be rolled back).

One battery over every family (tiny configs, CPU, offline): Trainer train/evaluate/save_model, the pipeline's
default call, `return_dict=False`, `past_key_values`, unknown keywords, activation checkpointing, `torch.export`
and ONNX, `AutoModel` and the sequence classifier, attention outputs, and PEFT.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    pipeline,
)
from transformers.cache_utils import Cache

import hwlm  # noqa: F401  (registers the Auto classes)
from hwlm.tokenization import train_word_tokenizer

from _toy import WORDS, fit_losses, toy_lines

CONTEXT = 24  # the Transformer's max_position_embeddings: small, so a default pipeline call would overrun it

FAMILIES = {
    "gru": ("hwlm_rnn", {"cell_type": "gru"}),
    "lstm": ("hwlm_lstm", {}),
    "lstm_tied_projection": ("hwlm_lstm", {"embedding_size": 12, "tie_word_embeddings": True}),
    "transformer": ("hwlm_transformer", {"num_attention_heads": 2, "max_position_embeddings": CONTEXT}),
}
DROPOUTS = {
    "hwlm_rnn": dict(embedding_dropout=0.1, input_dropout=0.2, hidden_dropout=0.2, output_dropout=0.2, weight_dropout=0.3),
    "hwlm_lstm": dict(embedding_dropout=0.1, input_dropout=0.2, hidden_dropout=0.2, output_dropout=0.2, weight_dropout=0.3),
    "hwlm_transformer": dict(embedding_dropout=0.1, hidden_dropout=0.1, attention_dropout=0.1),
}


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(toy_lines(200, seed=0) + [" ".join(WORDS)])


def make_model(name: str, tokenizer, seed: int = 0, **overrides):
    from transformers import AutoConfig

    model_type, extra = FAMILIES[name]
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{**extra, **overrides},
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param


@pytest.fixture
def folder(family, tokenizer, tmp_path):
    """A saved causal-LM folder (model + tokenizer), as hwlm-train leaves it."""
    path = tmp_path / family
    make_model(family, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ids_of(tokenizer, text: str) -> torch.LongTensor:
    return tokenizer(text, return_tensors="pt")["input_ids"]


def lm_dataset(tokenizer, n: int, seed: int) -> Dataset:
    return Dataset.from_dict({"text": toy_lines(n, seed)}).map(
        lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"]
    )


def test_trainer_train_evaluate_and_save_model(family, tokenizer, tmp_path):
    model = make_model(family, tokenizer)
    args = TrainingArguments(  # transformers' defaults but for a short, fast schedule
        output_dir=str(tmp_path / "trainer"),
        max_steps=6,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=lm_dataset(tokenizer, 64, seed=1),
        eval_dataset=lm_dataset(tokenizer, 16, seed=2),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    assert trainer.label_names == ["labels"]  # `shift_labels` is not taken for a label column
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert "eval_loss" in before and "eval_loss" in after
    assert after["eval_loss"] < before["eval_loss"]

    trainer.save_model(str(tmp_path / "saved"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    ids = ids_of(tokenizer, "w1 w2 w3 w5")
    torch.testing.assert_close(reloaded(input_ids=ids).logits, trainer.model.eval()(input_ids=ids).logits)


def test_pipeline_default_call_stays_within_the_context(family, folder):
    generator = pipeline("text-generation", model=str(folder))
    text = generator("w1 w2 w3")[0]["generated_text"]
    assert text.startswith("w1 w2 w3")
    if FAMILIES[family][0] == "hwlm_transformer":
        assert len(text.split()) == CONTEXT  # the pipeline's default of 256 new tokens ends at the context


def test_return_dict_false_gives_tuples(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5")
    out = model(input_ids=ids, labels=ids)
    as_tuple = model(input_ids=ids, labels=ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.loss)
    torch.testing.assert_close(as_tuple[1], out.logits)
    body = model.model(input_ids=ids, return_dict=False)
    assert isinstance(body, tuple)
    torch.testing.assert_close(body[0], model.model(input_ids=ids).last_hidden_state)


def test_past_key_values_is_the_deprecated_name_of_cache(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5 w6 w7")
    full = model(input_ids=ids).logits
    prefix = model(input_ids=ids[:, :4], use_cache=True)
    with pytest.warns(FutureWarning, match="past_key_values"):
        rest = model(input_ids=ids[:, 4:], past_key_values=prefix.cache)
    torch.testing.assert_close(rest.logits, full[:, 4:])


def test_unknown_keywords_are_refused(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2")
    with pytest.raises(TypeError, match="unexpected keyword argument.*'cach'"):
        model(input_ids=ids, cach=None)


def test_last_hidden_state_is_what_the_head_reads(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4")
    out = model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    torch.testing.assert_close(model.lm_head(out.hidden_states[-1]), out.logits)


def _gradients(model, ids, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    model(input_ids=ids, labels=ids).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_gives_identical_gradients(family, tokenizer):
    model_type = FAMILIES[family][0]
    model = make_model(family, tokenizer, **DROPOUTS[model_type]).train()
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5 w6 w7 w8")
    calls = []
    # The first weight-holding module inside layer 1 (the fused RNN itself, or the Transformer's first projection).
    # A pre-hook: the recomputation stops as soon as it has rebuilt what backward needs, before forward hooks run.
    first = next(m for m in model.model.layers[0].modules() if isinstance(m, (torch.nn.RNNBase, torch.nn.Linear)))
    first.register_forward_pre_hook(lambda *_: calls.append(1))

    plain = _gradients(model, ids, seed=5)
    assert len(calls) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing_enable is the name users know
        model.gradient_checkpointing_enable()
    assert model.is_activation_checkpointing
    calls.clear()
    checkpointed = _gradients(model, ids, seed=5)
    assert len(calls) == 2  # the layer ran again in the backward pass: the checkpoint really happened
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_trainer_with_gradient_checkpointing(family, tokenizer, tmp_path):
    model = make_model(family, tokenizer)
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=2,
        per_device_train_batch_size=8,
        gradient_checkpointing=True,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=lm_dataset(tokenizer, 16, seed=1),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    calls = []
    first = next(m for m in model.model.layers[0].modules() if isinstance(m, (torch.nn.RNNBase, torch.nn.Linear)))
    first.register_forward_pre_hook(lambda *_: calls.append(1))
    result = trainer.train()
    assert model.is_activation_checkpointing and result.global_step == 2
    assert len(calls) == 2 * 2  # each step ran layer 1 twice: forward, then its recomputation in backward


class _Logits(torch.nn.Module):
    """The logits alone: what an exported graph serves."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def test_torch_export_matches_eager(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5 w6")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch notes the fused RNN's flat-weight bookkeeping
        program = torch.export.export(_Logits(model).eval(), (ids,))
    other = ids_of(tokenizer, "w9 w8 w7 w6 w5 w4")
    torch.testing.assert_close(program.module()(other), model(input_ids=other).logits)


def test_onnx_export_matches_eager(family, tokenizer, tmp_path):
    import onnxruntime as ort  # in the dev extras: the test must run, not skip
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5 w6")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Logits(model).eval(), (ids,), dynamo=True, verbose=False).save(str(tmp_path / "model.onnx"))
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    other = ids_of(tokenizer, "w9 w8 w7 w6 w5 w4")
    (logits,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), model(input_ids=other).logits, atol=1e-5, rtol=1e-4)


def test_auto_model_loads_the_body(family, folder, tokenizer):
    lm = AutoModelForCausalLM.from_pretrained(folder).eval()
    body = AutoModel.from_pretrained(folder).eval()
    assert type(body).__name__.endswith("Model") and type(body) is type(lm.model)
    ids = ids_of(tokenizer, "w1 w2 w3 w4")
    torch.testing.assert_close(
        body(input_ids=ids).last_hidden_state, lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    )


def _two_classes(tokenizer, n: int, seed: int) -> Dataset:
    """Class 0: lines of words w0..w39; class 1: lines of words w40..w79. Lengths vary, so batches are padded."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        length = int(torch.randint(3, 9, (1,), generator=generator))
        words = torch.randint(0, 40, (length,), generator=generator) + 40 * label
        texts.append(" ".join(WORDS[w] for w in words))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels}).map(
        lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"]
    )


def test_sequence_classifier_fine_tunes_from_the_language_model(family, folder, tokenizer, tmp_path):
    lm = AutoModelForCausalLM.from_pretrained(folder)
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert type(classifier).__name__.endswith("ForSequenceClassification")
    for name, tensor in lm.model.state_dict().items():  # the pretrained body, not a fresh one
        torch.testing.assert_close(classifier.model.state_dict()[name], tensor, msg=name)

    args = TrainingArguments(
        output_dir=str(tmp_path / "clf"),
        num_train_epochs=4,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(
        model=classifier,
        args=args,
        train_dataset=_two_classes(tokenizer, 128, seed=0),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    test = _two_classes(tokenizer, 64, seed=1)
    predictions = trainer.predict(test)
    accuracy = float((predictions.predictions.argmax(-1) == predictions.label_ids).mean())
    assert accuracy >= 0.8, accuracy  # chance is 0.5


def test_classifier_reads_the_last_real_token_under_left_and_right_padding(family, folder, tokenizer):
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    alone = classifier(**tokenizer(["w3 w4 w5"], return_tensors="pt")).logits
    for side in ("left", "right"):
        tokenizer.padding_side = side
        batch = tokenizer(["w3 w4 w5", "w1 w2 w3 w4 w5 w6 w7"], padding=True, return_tensors="pt")
        torch.testing.assert_close(classifier(**batch).logits[:1], alone, msg=side)
    tokenizer.padding_side = "right"


def test_output_attentions_under_sdpa_matches_eager(tokenizer):
    sdpa = make_model("transformer", tokenizer, attn_implementation="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    eager = make_model("transformer", tokenizer, attn_implementation="eager")
    ids = ids_of(tokenizer, "w1 w2 w3 w4")
    got = sdpa(input_ids=ids, output_attentions=True).attentions
    want = eager(input_ids=ids, output_attentions=True).attentions
    assert len(got) == 2 and all(a is not None for a in got)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_models_refuse_assisted_decoding_through_their_cache(name, tokenizer):
    # Assisted decoding verifies draft tokens and rolls the cache back: a running state cannot roll back, and says so
    # through transformers' public cache property, so transformers itself refuses (the wording is transformers').
    model = make_model(name, tokenizer)
    assert model.carries_state
    cache = model(input_ids=ids_of(tokenizer, "w1 w2")).cache
    assert isinstance(cache, Cache) and not cache.is_croppable
    with pytest.raises((ValueError, RuntimeError)):
        model.generate(ids_of(tokenizer, "w1 w2"), assistant_model=make_model(name, tokenizer, seed=1), max_new_tokens=3)


def test_memory_transformer_assisted_decoding_equals_greedy(tokenizer):
    # The segment memory is transformers' sliding-window cache, which can roll back: assisted decoding runs, and
    # greedy verification must give exactly the model's own greedy continuation, past the memory's length.
    memory = {"memory_length": 4, "position_embedding_type": "alibi"}
    model = make_model("transformer", tokenizer, **memory)
    ids = ids_of(tokenizer, "w1 w2 w3")
    greedy = model.generate(ids, max_new_tokens=10, do_sample=False)
    assisted = model.generate(
        ids, assistant_model=make_model("transformer", tokenizer, seed=1, **memory), max_new_tokens=10, do_sample=False
    )
    assert torch.equal(assisted, greedy)


def test_trainer_label_smoothing_scores_the_shifted_labels(family, tokenizer, tmp_path):
    # Trainer pops the labels and smooths the logits itself; it shifts them only for models it lists as causal LMs.
    # Unshifted, the model would be trained to predict its own input token, silently.
    model = make_model(family, tokenizer)
    with torch.no_grad():  # peaked predictions: near-uniform ones score the same shifted or not
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    args = TrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.1, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args)
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)(lm_dataset(tokenizer, 4, seed=3).to_list())
    got = trainer.compute_loss(model, dict(batch))

    log_p = torch.log_softmax(model(input_ids=batch["input_ids"]).logits[:, :-1], dim=-1)  # (B, T-1, V)
    targets = batch["labels"][:, 1:]  # the label at t+1 is the target of position t
    real = targets != -100
    nll = -log_p.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)[real].mean()
    uniform = -log_p.mean(-1)[real].mean()  # cross-entropy against the uniform distribution over the vocabulary
    torch.testing.assert_close(got, 0.9 * nll + 0.1 * uniform)


def test_stop_strings_end_generation_on_words(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3")
    free = model.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    words = tokenizer.decode(free[0, ids.shape[1] :]).split()
    stop = words[2]
    first = words.index(stop)
    stopped = model.generate(ids, max_new_tokens=8, do_sample=False, stop_strings=[stop], tokenizer=tokenizer)
    assert tokenizer.decode(stopped[0, ids.shape[1] :]).split() == words[: first + 1]
    # Two words, and a stop string that ends inside a word (as for subword vocabularies).
    two = " ".join(words[3:5])
    stopped = model.generate(ids, max_new_tokens=8, do_sample=False, stop_strings=two, tokenizer=tokenizer)
    assert tokenizer.decode(stopped[0]).strip().endswith(two)
    stopped = model.generate(ids, max_new_tokens=8, do_sample=False, stop_strings=[stop[:-1]], tokenizer=tokenizer)
    assert tokenizer.decode(stopped[0, ids.shape[1] :]).split()[-1].startswith(stop[:-1])
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(ids, max_new_tokens=2, stop_strings=[stop])


def test_pipeline_stop_sequence(family, folder):
    generator = pipeline("text-generation", model=str(folder))
    free = generator("w1 w2 w3", max_new_tokens=6, min_new_tokens=6, do_sample=False, return_full_text=False)
    words = free[0]["generated_text"].split()
    out = generator("w1 w2 w3", max_new_tokens=6, do_sample=False, return_full_text=False, stop_sequence=words[1])
    assert out[0]["generated_text"].split() == words[: words.index(words[1]) + 1]


def test_unknown_words_stay_visible_after_decoding(family, folder, tokenizer):
    ids = tokenizer("zzz w1 qqq").input_ids  # two words outside the vocabulary
    assert ids[0] == ids[2] == tokenizer.convert_tokens_to_ids("<unk>")
    for skip in (False, True):
        assert tokenizer.decode(ids, skip_special_tokens=skip).split() == ["<unk>", "w1", "<unk>"]
    loaded = AutoTokenizer.from_pretrained(folder)  # what a pipeline or a Hub user gets
    assert loaded.decode(ids, skip_special_tokens=True).split() == ["<unk>", "w1", "<unk>"]
    assert loaded.decode([loaded.eos_token_id, ids[1]], skip_special_tokens=True).split() == ["w1"]  # <eos> is special
    generator = pipeline("text-generation", model=str(folder))  # decodes new tokens with skip_special_tokens=True
    assert generator.tokenizer.decode(ids, skip_special_tokens=True).split() == ["<unk>", "w1", "<unk>"]


def test_generate_with_max_new_tokens_warns_about_nothing(family, tokenizer, capfd):
    model = make_model(family, tokenizer)
    model.generate(ids_of(tokenizer, "w1 w2"), max_new_tokens=3, do_sample=False)
    assert "max_length" not in capfd.readouterr().err


def test_config_overrides_as_run_clm_applies_them(family, tokenizer, tmp_path):
    # transformers' run_clm.py: AutoConfig.for_model(model_type), then config.update_from_string(--config_overrides).
    model_type, _ = FAMILIES[family]
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer))
    config.update_from_string("hidden_size=32,num_hidden_layers=1")
    model = AutoModelForCausalLM.from_config(config)
    assert model.get_input_embeddings().weight.shape == (len(tokenizer), 32)  # the derived embedding width follows
    if model_type == "hwlm_transformer":
        assert model.model.layers[0].mlp.fc_in.out_features == 4 * 32  # the derived inner size follows
        config.update_from_string("memory_length=16,position_embedding_type=alibi")  # an optional int, None before
        assert AutoModelForCausalLM.from_config(config).config.memory_length == 16
        config.update_from_string("memory_length=none")
        assert config.memory_length is None
    # A folder saved with an explicit size (the old form) loads unchanged.
    explicit = {"intermediate_size": 40} if model_type == "hwlm_transformer" else {"embedding_size": 12, "tie_word_embeddings": True}
    make_model(family, tokenizer, **explicit).save_pretrained(tmp_path / "old")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "old", hidden_size=16)
    key = next(iter(explicit))
    assert getattr(reloaded.config, key) == explicit[key]
    with pytest.raises(ValueError, match="memory_length"):
        config.update_from_string("memory_length=lots")


@pytest.mark.parametrize(
    "name, target",
    [("transformer", {"target_modules": ["qkv_proj", "o_proj"]}), ("lstm", {"target_parameters": ["weight_hh_l0"]})],
)
def test_peft_lora_trains_only_the_adapters(name, target, tokenizer):
    import peft  # in the dev extras: the test must run, not skip
    model = make_model(name, tokenizer).train()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM", **target))
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert trainable and sum(p.numel() for p in trainable) < sum(p.numel() for p in lora.parameters()) / 2
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    ids = ids_of(tokenizer, " ".join(WORDS[:20]))
    losses = fit_losses(lora, ids, optimizer, steps=20)
    assert losses[-1] < losses[0]
    merged = lora.merge_and_unload()
    assert set(merged.state_dict()) == set(frozen)  # merging leaves a plain hwlm model


def test_tokenizer_carries_the_context_length(tokenizer, tmp_path):
    from hwlm.tokenization import fit_tokenizer_to_model

    model = make_model("transformer", tokenizer)
    fitted = fit_tokenizer_to_model(tokenizer, model.config)
    assert fitted.model_max_length == CONTEXT and fitted.truncation_side == "left"
    fitted.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.model_max_length == CONTEXT
    long_text = " ".join(WORDS[:40])
    ids = reloaded(long_text, truncation=True)["input_ids"]
    assert ids == reloaded(" ".join(WORDS[40 - CONTEXT : 40]))["input_ids"]  # the most recent words are kept
    recurrent = make_model("lstm", tokenizer)
    assert fit_tokenizer_to_model(tokenizer, recurrent.config).model_max_length == tokenizer.model_max_length


def test_pipeline_batches_and_streamers(family, folder, tokenizer):
    from transformers import TextIteratorStreamer

    generator = pipeline("text-generation", model=str(folder))
    generator.tokenizer.padding_side = "left"
    prompts = ["w1 w2 w3", "w7", "w4 w5"]
    alone = [generator(p, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0]["generated_text"] for p in prompts]
    batched = generator(prompts, batch_size=3, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert [out[0]["generated_text"] for out in batched] == alone  # left padding changes nothing

    model = generator.model
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    ids = ids_of(tokenizer, "w1 w2 w3")
    generated = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, streamer=streamer)
    assert "".join(streamer).split() == tokenizer.decode(generated[0, ids.shape[1] :]).split()


def test_transition_scores_are_the_log_probabilities_of_the_chosen_tokens(family, tokenizer):
    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3")
    out = model.generate(ids, max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True)
    scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)  # (1, 3)
    logits = model(input_ids=out.sequences).logits  # the naive recompute over the whole sequence
    expected = torch.log_softmax(logits[0, ids.shape[1] - 1 : -1], dim=-1).gather(-1, out.sequences[0, ids.shape[1] :, None])
    torch.testing.assert_close(scores[0], expected[:, 0], atol=1e-5, rtol=1e-4)


def test_dynamic_quantization_stays_close(family, tokenizer):
    model = make_model(family, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization is slated to move to torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU})
    assert any("quantized" in type(m).__module__ for m in quantized.modules())
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5")
    reference = torch.softmax(model(input_ids=ids).logits, -1)
    torch.testing.assert_close(torch.softmax(quantized(input_ids=ids).logits, -1), reference, atol=0.02, rtol=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_compile_fullgraph_matches_eager(name, tokenizer):
    import torch._dynamo

    torch._dynamo.reset()
    model = make_model(name, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3 w4 w5")
    # The README's recipe: dynamo leaves the fused RNN modules out of its graphs unless told to trace them.
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(model, fullgraph=True)
        logits = compiled(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(logits, model(input_ids=ids).logits)
    torch._dynamo.reset()


RUN_CLM_MODEL_PATH = '''
# How transformers' examples/pytorch/language-modeling/run_clm.py builds a new model from --model_type.
import argparse
from transformers import CONFIG_MAPPING, AutoModelForCausalLM
parser = argparse.ArgumentParser()
parser.add_argument("--model_type")
parser.add_argument("--config_overrides")
parser.add_argument("--output_dir")
args = parser.parse_args()
config = CONFIG_MAPPING[args.model_type]()
config.update_from_string(args.config_overrides)
AutoModelForCausalLM.from_config(config).save_pretrained(args.output_dir)
'''


def test_run_clm_builds_hwlm_model_types_through_run_script(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "run_clm_model_path.py"
    script.write_text(RUN_CLM_MODEL_PATH)
    overrides = "hidden_size=32,num_attention_heads=2,memory_length=16,position_embedding_type=alibi,vocab_size=50"
    args = [str(script), "--model_type", "hwlm_transformer", "--config_overrides", overrides, "--output_dir", str(tmp_path / "out")]
    plain = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    assert plain.returncode != 0 and "hwlm_transformer" in plain.stderr  # the script alone does not know the type
    subprocess.run([sys.executable, "-m", "hwlm.run_script", *args], check=True, capture_output=True, text=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.memory_length == 16 and model.model.layers[0].mlp.fc_in.out_features == 128


def test_generation_lengths_are_the_callers(family, tokenizer):
    from transformers import GenerationConfig

    model = make_model(family, tokenizer)
    ids = ids_of(tokenizer, "w1 w2 w3")  # 3 tokens
    no_eos = {"do_sample": False, "eos_token_id": None}
    assert model.generate(ids, max_new_tokens=5, **no_eos).shape[1] == 8
    assert model.generate(ids, max_length=7, **no_eos).shape[1] == 7
    assert model.generate(ids, generation_config=GenerationConfig(max_length=6, do_sample=False, eos_token_id=None)).shape[1] == 6
    if FAMILIES[family][0] == "hwlm_transformer":
        assert model.generate(ids, **no_eos).shape[1] == CONTEXT  # by default up to the context, not past it
        own = model.generation_config  # passing the model's own config is the default, not a request past the context
        assert model.generate(ids, generation_config=own, do_sample=False, eos_token_id=None).shape[1] == CONTEXT
        with pytest.raises(ValueError, match=rf"Sequence of {CONTEXT + 1} tokens .* max_position_embeddings={CONTEXT}"):
            model.generate(ids, max_new_tokens=CONTEXT - 2, **no_eos)
