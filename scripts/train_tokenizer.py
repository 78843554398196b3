"""Thin wrapper over hwlm.cli.train_tokenizer (also installed as `hwlm-tokenizer`)."""

from hwlm.cli.train_tokenizer import main

if __name__ == "__main__":
    main()
