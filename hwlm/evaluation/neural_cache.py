"""The neural cache pointer (Grave, Joulin & Usunier 2017, arXiv:1612.04426): keep the last ``cache_size`` pairs
(h_i, x_{i+1}) of hidden state and next word, and mix::

    p(w | h_t) = (1 - λ) p_vocab(w | h_t) + λ p_cache(w | h_t),
    p_cache(w | h_t) ∝ Σ_{i: x_{i+1} = w} exp(θ h_t · h_i)      (i over the last cache_size positions < t)

``h`` is what the output layer reads (captured at the head's input, `hwlm.evaluation.segments.head_inputs`, so it
is the final-norm output of the Transformer and the projected state of a recurrent model whose tied embedding is
narrower than its hidden size). A position with an empty cache (the very first of a stream) uses p_vocab alone.
The pass that scores a split with it is `hwlm.evaluation.test_time`.
"""

from __future__ import annotations

import torch

from hwlm.settings import NeuralCacheSettings  # noqa: F401  (re-exported: defined where --help reads it)

__all__ = ["NeuralCacheSettings", "NeuralCache", "pointer_weights", "cache_distribution"]


def pointer_weights(
    queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor, *, num_past: int, cache_size: int, theta: float
) -> torch.Tensor:
    """Cache attention of each query over the keys before it.

    Args:
        queries (`torch.Tensor` of shape (S, T, D)): hidden states at positions ``num_past ... num_past+T-1``.
        keys (`torch.Tensor` of shape (S, K, D)): the states at positions ``0 ... K-1`` (the history, then the
            queries' own states; K = num_past + T).
        key_valid (`torch.BoolTensor` of shape (S, K)): False for padding.
        num_past (`int`): number of history keys before the first query.
        cache_size (`int`) / theta (`float`): query t attends to the valid keys j with t - cache_size <= j < t.

    Returns:
        `torch.Tensor` of shape (S, T, K): softmax of ``θ q·k`` over the allowed keys, 0 elsewhere; a query
        with no allowed key gets a row of zeros.
    """
    num_queries, num_keys = queries.size(1), keys.size(1)
    scores = theta * torch.einsum("std,skd->stk", queries.float(), keys.float())  # (S, T, K)
    key_pos = torch.arange(num_keys, device=keys.device)  # (K,)
    query_pos = num_past + torch.arange(num_queries, device=keys.device)  # (T,)
    allowed = (key_pos[None, :] < query_pos[:, None]) & (key_pos[None, :] >= query_pos[:, None] - cache_size)  # (T, K)
    allowed = allowed[None] & key_valid[:, None, :]  # (S, T, K)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * allowed  # rows with nothing allowed: uniform * 0 = 0


def cache_distribution(weights: torch.Tensor, key_targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """p_cache over the vocabulary (S, T, V) from `pointer_weights` (S, T, K) and the keys' next words (S, K)."""
    index = key_targets.clamp(min=0)[:, None, :].expand_as(weights)  # (S, T, K); invalid keys carry weight 0
    return torch.zeros(*weights.shape[:2], vocab_size, dtype=weights.dtype, device=weights.device).scatter_add_(
        -1, index, weights
    )


class NeuralCache:
    """The recent (hidden state, next word) pairs of each stream, and the mixture's summed NLL over a grid.

    Args:
        cache_size (`int`): pairs kept per stream.
        thetas / lambdas (sequences of `float`): the θ and λ to score at once (one setting: one value each);
            a whole grid costs one model pass, which is what tuning on validation uses.
    """

    def __init__(self, cache_size: int, thetas, lambdas):
        self.cache_size = cache_size
        self.thetas = [float(t) for t in thetas]
        self.lambdas = torch.tensor([float(v) for v in lambdas], dtype=torch.float64)  # (G_λ,)
        self.reset()

    def reset(self) -> None:
        self.keys = self.key_targets = self.key_valid = None

    def score(self, features: torch.Tensor, log_p_vocab: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed -log p of the mixture for each (θ, λ), then add this segment to the cache.

        Args:
            features (`torch.Tensor` of shape (S, T, D)): what the output layer read, per stream.
            log_p_vocab (`torch.Tensor` of shape (S, T)): the model's log-probability of each target.
            targets (`torch.LongTensor` of shape (S, T)): next words; -100 marks padding (not scored, not cached).

        Returns:
            `torch.Tensor` of shape (G_θ, G_λ), float64.
        """
        valid = targets != -100  # (S, T)
        if self.keys is None:
            self.keys = features[:, :0]
            self.key_targets, self.key_valid = targets[:, :0], valid[:, :0]
        num_past = self.keys.size(1)
        keys = torch.cat([self.keys, features], dim=1)  # (S, C+T, D)
        key_targets = torch.cat([self.key_targets, targets], dim=1)  # (S, C+T)
        key_valid = torch.cat([self.key_valid, valid], dim=1)  # (S, C+T)
        hits = key_targets[:, None, :] == targets[:, :, None]  # (S, T, C+T): key j's next word is query t's target
        lambdas = self.lambdas.to(features.device)
        log_vocab = log_p_vocab.double()[None] + torch.log1p(-lambdas)[:, None, None]  # (G_λ, S, T)
        sums = []
        for theta in self.thetas:
            w = pointer_weights(features, keys, key_valid, num_past=num_past, cache_size=self.cache_size, theta=theta)
            p_cache = (w * hits).sum(-1).double()  # (S, T)
            has_cache = w.sum(-1) > 0  # (S, T)
            mixed = torch.logaddexp(log_vocab, torch.log(lambdas)[:, None, None] + torch.log(p_cache)[None])
            mixed = torch.where(has_cache[None], mixed, log_p_vocab.double()[None])  # (G_λ, S, T)
            sums.append(-(mixed * valid[None]).sum(dim=(1, 2)))
        keep = min(keys.size(1), self.cache_size)
        self.keys, self.key_targets, self.key_valid = keys[:, -keep:], key_targets[:, -keep:], key_valid[:, -keep:]
        return torch.stack(sums).cpu()  # (G_θ, G_λ)
