"""Per-epoch collapse diagnostics that need no extra forward pass."""

from __future__ import annotations

import torch

from nasctl.genotype import CellGenotype, Genotype


def skip_count(genotype: Genotype) -> int | None:
    """Skip connections in the derived normal cell (DARTS-cell genotypes only)."""
    if isinstance(genotype, CellGenotype):
        return sum(op == "skip_connect" for op, _ in genotype.normal)
    return None


def alpha_entropy(alphas: dict[str, torch.Tensor]) -> float:
    """Mean entropy (nats) of softmax(alpha) over all edges of all cell types."""
    rows = torch.cat([a.detach().float().reshape(-1, a.shape[-1]) for a in alphas.values()])
    p = torch.softmax(rows, dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())
