"""Score a pytorch/examples TransformerModel with hwlm's evaluators: the upstream protocol (10 streams, disjoint
35-token chunks) and hwlm's sliding window (one stream, window 35, stride 17), on validation and test."""
import json
import math
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from hwlm.evaluation import evaluate_perplexity


class UpstreamAsHwlm(torch.nn.Module):
    """hwlm's call (batch-first input_ids, shift_labels, summed loss) around the upstream (T, B) model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input_ids, shift_labels, num_items_in_batch=None, cache=None, use_cache=False):
        logp = self.net(input_ids.t().contiguous())  # (T, B, V) log-probabilities
        V = logp.shape[-1]
        loss = F.nll_loss(logp.transpose(0, 1).reshape(-1, V), shift_labels.reshape(-1), ignore_index=-100,
                          reduction="sum")
        return SimpleNamespace(loss=loss, cache=None)


def score(model, corpus, upstream_valid=None, upstream_test=None, out="protocols.json"):
    torch.set_num_threads(1)
    wrapped = UpstreamAsHwlm(model)
    result = {"upstream_evaluate": {"validation_loss": upstream_valid, "test_loss": upstream_test,
                                    "validation_perplexity": math.exp(upstream_valid) if upstream_valid else None,
                                    "test_perplexity": math.exp(upstream_test) if upstream_test else None}}
    for split, tokens in (("validation", corpus.valid), ("test", corpus.test)):
        for name, kwargs in (("chunks", dict(protocol="chunks", batch_size=10, window=35)),
                             ("sliding_window", dict(protocol="sliding_window", batch_size=10, window=35, stride=17))):
            t0 = time.process_time()
            r = evaluate_perplexity(wrapped, tokens, **kwargs)
            r["cpu_s"] = round(time.process_time() - t0, 1)
            result.setdefault(name, {})[split] = r
            print(f"| hwlm {name} {split}: loss {r['loss']:.6f} ppl {r['perplexity']:.4f} "
                  f"tokens {r['num_tokens']} cpu_s {r['cpu_s']}", flush=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":  # score a saved model again: python score_protocols.py (in the run folder)
    import data
    model = torch.load("pt-transformer.pt", weights_only=False)
    score(model, data.Corpus("data"))
