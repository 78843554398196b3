"""Model cards and Hub uploads for hwlm output folders.

The card is rendered from the top-level ``model_card.md`` (a Jinja template) with
``huggingface_hub.ModelCard.from_template``, which writes the YAML header the Hub reads
(``library_name``, ``pipeline_tag``, ``datasets``, ``license``, ``metrics``, ``model-index``).
Uploads send the whole folder (model, tokenizer, code, card, results, curves) with
``HfApi().upload_folder``; ``model.push_to_hub`` would send the model only.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hwlm.errors import UserError

__all__ = [
    "render_model_card",
    "write_model_card",
    "save_hub_folder",
    "refresh_model_card",
    "check_card_folder",
    "perplexity_scores",
    "example_prompt",
    "push_folder",
    "hub_timeouts",
    "HubUnreachable",
    "MODEL_CARD_TEMPLATE",
]

# The top-level model_card.md, reached through the symlink hwlm/model_card.md so that it also ships as package
# data in a (non-editable) installed hwlm.
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card.md"


#: result-key infix -> how the card names the method (hwlm-eval's test-time methods; see hwlm.evaluation.test_time)
ADAPTED_METHODS = {
    "neural_cache": "neural cache",
    "dynamic_eval": "dynamic evaluation",
    "dynamic_eval_neural_cache": "dynamic evaluation + neural cache",
}
_SCORE_KEY = re.compile(r"^(?P<split>[a-z]+)_(?:(?P<method>" + "|".join(sorted(ADAPTED_METHODS, key=len, reverse=True))
                        + r")_)?perplexity$")


def perplexity_scores(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(split, method, key)`` of every perplexity in ``results``, plain first then each test-time method, so a card
    reports ``test_perplexity`` and e.g. ``test_neural_cache_perplexity`` as separate, named figures."""
    found = [(m["split"], ADAPTED_METHODS.get(m["method"], "plain"), key)
             for key in results if (m := _SCORE_KEY.match(key))]
    order = ["plain", *ADAPTED_METHODS.values()]
    return sorted(found, key=lambda score: (score[0], order.index(score[1])))


def hub_dataset_id(dataset_name: str | None) -> str | None:
    """The Hub dataset id for a card's ``datasets`` metadata: a named corpus's Hub copy (``ptb`` ->
    ``ptb_text_only``, ``wikitext-2`` -> ``Salesforce/wikitext``), a Hub id as given, ``None`` for local files."""
    if not dataset_name or os.path.exists(dataset_name):
        return None
    from hwlm.corpora import named_corpus

    corpus = named_corpus(dataset_name)
    return corpus.hub_dataset if corpus is not None else dataset_name


def _score_tables(results: dict[str, Any], dataset_name: str | None) -> tuple[list, list[dict]]:
    """The card's perplexities twice: as ``huggingface_hub.EvalResult`` metadata (``model-index``) and as rows of its
    results table, plain first, each test-time method named."""
    from huggingface_hub import EvalResult

    scores = perplexity_scores(results)
    eval_results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=dataset_name or "local",
            dataset_name=dataset_name or "local corpus",
            dataset_split=split,
            metric_type="perplexity",
            metric_name=f"{split} perplexity" + (f" ({method})" if method != "plain" else ""),
            metric_value=round(float(results[key]), 2),
        )
        for split, method, key in scores
    ]
    rows = [
        {
            "split": split if method == "plain" else f"{split}, {method}",
            "perplexity": f"{results[key]:.2f}",
            "loss": f"{results.get(key[: -len('perplexity')] + 'loss', float('nan')):.4f}",
            "num_tokens": results.get(f"{split}_num_tokens", ""),
        }
        for split, method, key in scores
    ]
    return eval_results, rows


def render_model_card(
    *,
    model_name: str,
    config,
    results: dict[str, Any],
    command: str,
    settings: dict[str, Any] | None = None,
    dataset_name: str | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    num_parameters: int | None = None,
    template_path: str | os.PathLike | None = None,
    language: str | None = "en",
    prompt: str | None = None,
):
    """Render the model card for a trained folder.

    Args:
        model_name: the card title and ``model-index`` name.
        config: the model's ``PreTrainedConfig`` (architecture and vocabulary size).
        results: ``all_results.json`` content: keys ``<split>_perplexity``, ``<split>_loss``, ``<split>_num_tokens``.
        command: the exact command line of the run.
        settings: run settings to show (a flat mapping).
        dataset_name: Hub dataset id (goes to the ``datasets`` metadata) or a local description.
        language: the corpus language (ISO 639-1) for the ``language`` metadata; ``None`` to leave it out.
        prompt: the usage snippet's prompt, best taken from the model's own validation text (see
            :func:`example_prompt`), so it is made of words the model knows.
    Returns:
        a ``huggingface_hub.ModelCard``.
    """
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    eval_results, rows = _score_tables(results, dataset_name)
    hub_dataset = hub_dataset_id(dataset_name)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        datasets=[hub_dataset] if hub_dataset else None,
        language=[language] if language else None,
        metrics=["perplexity"],
        tags=["hwlm", config.model_type, "word-level", "language-modeling"],
        eval_results=eval_results or None,
    )
    stateful = bool(results.get("eval_method") == "stream")
    eval_method = (
        "each split read as contiguous streams (as many as the evaluation batch holds, per process) with the state "
        "carried across windows; one stream (`hwlm-eval --per_device_eval_batch_size 1`) gives the literature's "
        "single-stream figure."
        if stateful
        else "sliding window (see `hwlm/evaluation/perplexity.py`)."
    )
    template = Path(template_path) if template_path else MODEL_CARD_TEMPLATE
    kwargs = dict(
        model_name=model_name,
        architecture=getattr(config, "model_type", "causal LM"),
        num_parameters=f"{num_parameters:,}" if num_parameters else "?",
        vocab_size=getattr(config, "vocab_size", "?"),
        dataset_name=dataset_name,
        eval_method=eval_method,
        results_table=rows,
        repo_id=repo_id or "path/to/folder",
        command=command,
        settings=yaml.safe_dump(settings or {}, sort_keys=True).strip(),
        prompt=json.dumps(prompt or "the"),  # a Python string literal, quotes escaped
    )
    return ModelCard.from_template(card_data, template_path=str(template), **kwargs)


def check_card_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a `Path` when hwlm-train finished it (its README.md is hwlm's card); else a `ValueError`."""
    folder = Path(folder)
    if not (folder / "hwlm_run.json").is_file() or not (folder / "all_results.json").is_file():
        raise UserError(
            f"{str(folder)!r} is not a folder hwlm-train finished (no hwlm_run.json / all_results.json), so its "
            "README.md is not hwlm's card to rewrite; drop --update_model_card or evaluate a trained folder."
        )
    return folder


def refresh_model_card(folder: str | os.PathLike, new_results: dict[str, Any], *, prompt: str | None = None) -> Path:
    """
    Render again the card of a folder written by ``hwlm-train``, with ``new_results`` (e.g. ``hwlm-eval``'s adapted
    perplexities) merged into the run's ``all_results.json`` figures; everything else comes from the run's own
    record (``hwlm_run.json``: command and settings) and ``config.json``. Only ``README.md`` is rewritten.

    Raises:
        ValueError: the folder holds no hwlm-train record (its README.md may be the user's own).
    """
    from transformers import AutoConfig

    from hwlm.output_folders import check_no_links

    folder = check_card_folder(folder)
    check_no_links(folder, ["README.md", "hwlm_run.json"])  # README.md as a link would overwrite its target
    record = json.loads((folder / "hwlm_run.json").read_text())
    settings = record.get("settings") or {}
    settings = settings if isinstance(settings, dict) else {}
    results = {**json.loads((folder / "all_results.json").read_text()), **new_results}
    repo_id = settings.get("hub_model_id")
    path = write_model_card(
        folder,
        model_name=repo_id.split("/")[-1] if repo_id else folder.resolve().name,
        config=AutoConfig.from_pretrained(folder),
        results=results,
        command=record.get("command", ""),
        settings=settings,
        dataset_name=settings.get("dataset_name"),
        license=settings.get("license", "apache-2.0"),
        repo_id=repo_id,
        num_parameters=results.get("num_parameters"),
        prompt=prompt,
    )
    from hwlm.output_folders import record_written

    record_written(folder, "hwlm_run.json", [], hash_files=True)  # the card is still hwlm's: record its new hash
    return path


def write_model_card(folder: str | os.PathLike, **kwargs) -> Path:
    """Render the card (see :func:`render_model_card`) and save it as ``folder/README.md``."""
    card = render_model_card(**kwargs)
    path = Path(folder) / "README.md"
    card.save(str(path))
    return path


def example_prompt(tokenizer, token_ids, num_words: int = 4) -> str | None:
    """
    The first run of ``num_words`` ordinary words (no special token, no ``<unk>``) in ``token_ids`` (N,), decoded:
    a prompt that the model has seen the like of, for the card's usage snippet. ``None`` when there is none.
    """
    special = set(tokenizer.all_special_ids)
    run: list[int] = []
    for token in (int(t) for t in token_ids[: 100 * num_words]):
        run = run + [token] if token not in special else []
        if len(run) == num_words:
            return tokenizer.decode(run).strip()
    return None


def save_hub_folder(folder: str | os.PathLike, model, tokenizer, *, card: dict[str, Any]) -> Path:
    """
    Write the Hub folder of a trained model: weights, config, generation config and code (``save_pretrained``),
    the tokenizer fitted to the model's context (see ``hwlm.tokenization.fit_tokenizer_to_model``), and the model
    card rendered from ``card`` (the keyword arguments of :func:`render_model_card` but ``config``).
    """
    from hwlm.tokenization import fit_tokenizer_to_model

    folder = Path(folder)
    model.save_pretrained(folder)
    fit_tokenizer_to_model(tokenizer, model.config).save_pretrained(folder)
    return write_model_card(folder, config=model.config, **card)


# never uploaded: training state, and the run-internal markers (hwlm_run.json lists what --overwrite_output_dir may
# delete: a downloaded copy must not carry that list into someone else's folder), the lock and temporary files
PUSH_IGNORE = (
    "checkpoints/**", "best_model/**", "best_model-before-branch*/**", "metrics-before-branch*.jsonl", "runs/**",
    "*.tmp*", ".hwlm.lock", "hwlm_run.json", "hwlm_data.json", "hwlm_tokenizer.json",
)

HUB_TIMEOUT = 60.0  # seconds without an answer (connect, each read or write) before a request fails
HUB_MAX_RETRIES = 3  # further attempts after a timeout, a lost connection or a 5xx answer


class HubUnreachable(RuntimeError):
    """The Hub did not answer (timeouts / connection errors / 5xx) within the bounded retries."""


@contextmanager
def hub_timeouts(timeout: float):
    """Give huggingface_hub's shared HTTP client a ``timeout`` (its default client has none, so a Hub that
    accepts the connection and never answers hangs an upload forever); the previous client factory is restored."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def factory():
        client = previous()
        client.timeout = timeout  # httpx: applies to connect, read, write and pool waits alike
        return client

    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(previous)


def _retryable(err: BaseException) -> bool:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, (httpx2.TimeoutException, httpx2.TransportError)):
        return True
    response = getattr(err, "response", None)
    return isinstance(err, HfHubHTTPError) and response is not None and response.status_code >= 500


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload hwlm model",
    timeout: float = HUB_TIMEOUT,
    max_retries: int = HUB_MAX_RETRIES,
    retry_wait: float = 2.0,
) -> str:
    """Create ``repo_id`` if needed and upload every file of ``folder`` except checkpoints and the run-internal
    markers (`PUSH_IGNORE`); return the commit URL.

    Set ``HF_ENDPOINT`` to target another hub (the tests use a server on loopback). Every request gives up after
    ``timeout`` seconds without an answer; the whole upload is tried ``1 + max_retries`` times, waiting
    ``retry_wait * 2**attempt`` seconds in between, on timeouts, connection errors and 5xx answers.

    Raises:
        FileNotFoundError: ``folder`` is not a model folder.
        ValueError: ``timeout`` is not positive or ``max_retries`` is negative.
        HubUnreachable: the Hub did not answer within the retries.
    """
    from huggingface_hub import HfApi, constants

    folder = Path(folder)
    if not timeout > 0 or max_retries < 0:
        raise UserError(f"timeout must be > 0 and max_retries >= 0, got timeout={timeout}, max_retries={max_retries}")
    missing = [name for name in ("config.json", "model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder: {missing} missing (train first, or point at the output_dir)")
    api = HfApi(token=token)
    for attempt in range(max_retries + 1):
        try:
            with hub_timeouts(timeout):
                api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
                info = api.upload_folder(
                    repo_id=repo_id,
                    folder_path=str(folder),
                    commit_message=commit_message,
                    ignore_patterns=list(PUSH_IGNORE),
                )
            return str(getattr(info, "commit_url", info))
        except Exception as err:
            if not _retryable(err):
                raise
            if attempt == max_retries:
                raise HubUnreachable(
                    f"the Hub at {constants.ENDPOINT} did not answer ({type(err).__name__}: {err}) in {max_retries + 1} "
                    f"attempts with a {timeout:g} s timeout; check HF_ENDPOINT and the connection, or raise --timeout."
                ) from err
            time.sleep(retry_wait * 2**attempt)
    raise AssertionError("unreachable")
