"""Per-epoch collapse diagnostics that need no extra forward pass (the skip count is the genotype's own)."""

from __future__ import annotations

import torch


def alpha_entropy(alphas: dict[str, torch.Tensor]) -> float:
    """Mean entropy (nats) of softmax(alpha) over all edges of all cell types."""
    rows = torch.cat([a.detach().float().reshape(-1, a.shape[-1]) for a in alphas.values()])
    p = torch.softmax(rows, dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())
