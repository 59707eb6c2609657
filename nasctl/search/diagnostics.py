"""Per-epoch collapse diagnostics that need no extra forward pass."""

from __future__ import annotations

import torch

from nasctl.genotype import CellGenotype, Genotype


def skip_count(genotype: Genotype) -> int:
    """Skip connections in the derived normal cell (NB201: in the one cell)."""
    ops = [op for op, _ in genotype.normal] if isinstance(genotype, CellGenotype) else genotype.ops
    return sum(op == "skip_connect" for op in ops)


def alpha_entropy(alphas: dict[str, torch.Tensor]) -> float:
    """Mean entropy (nats) of softmax(alpha) over all edges of all cell types."""
    rows = torch.cat([a.detach().float().reshape(-1, a.shape[-1]) for a in alphas.values()])
    p = torch.softmax(rows, dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())
