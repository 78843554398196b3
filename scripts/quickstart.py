"""The quickstart, end to end: prepare the embedded corpus, train the quickstart preset, evaluate, sample.

    python scripts/quickstart.py                   # what `make quickstart` runs
    python scripts/quickstart.py --max_train_steps 20 --output_dir outputs/qs-smoke   # extra flags go to hwlm-train
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    from hwlm.cli.evaluate import EvalArguments
    from hwlm.evaluation import evaluate_folder
    from hwlm.cli.generate import GenerateArguments, generate_text
    from hwlm.cli.train import main as train_main
    from hwlm.data import DataArguments, load_corpus, load_prepared, prepare_datasets, resolve_tokenizer
    from hwlm.cli.common import read_preset

    argv = list(sys.argv[1:] if argv is None else argv)
    preset = REPO / "presets" / "quickstart.yaml"
    output_dir = read_preset(preset)["output_dir"]
    if "--output_dir" in argv:
        output_dir = argv[argv.index("--output_dir") + 1]
    else:
        argv += ["--output_dir", output_dir]
    data_dir = Path(output_dir + "-data")
    start = time.perf_counter()

    print(f"[1/4] preparing the embedded corpus into {data_dir}")
    if (data_dir / "hwlm_data.json").is_file():
        load_prepared(data_dir)  # checks the tokenizer fingerprint
    else:
        args = DataArguments()
        corpus = load_corpus(args)
        prepare_datasets(corpus, resolve_tokenizer(args, corpus), block_size=args.block_size, output_dir=data_dir)

    print(f"[2/4] training ({preset.relative_to(REPO)})")
    train_main(["--config", str(preset), "--prepared_data_dir", str(data_dir), "--overwrite_output_dir", *argv])

    print("[3/4] evaluating the saved folder (each split as one stream)")
    results = evaluate_folder(
        EvalArguments(model_name_or_path=output_dir, prepared_data_dir=str(data_dir), per_device_eval_batch_size=1)
    )

    print("[4/4] sampling")
    sample = generate_text(
        GenerateArguments(model_name_or_path=output_dir, prompt="the", max_new_tokens=30, top_k=40, temperature=0.8)
    )[0]
    print(f"\n{sample}\n")
    print(
        f"test perplexity {results['test_perplexity']:.1f} "
        f"(validation {results['validation_perplexity']:.1f}) in {time.perf_counter() - start:.0f} s"
    )
    print(f"model folder: {Path(output_dir).resolve()}")
    return {**results, "sample": sample, "output_dir": output_dir}


if __name__ == "__main__":
    main()
