"""Relaxations, registered by name; `build_relaxation` makes one from its config node.

Adding a relaxation is one module here (registering a `Relaxation` subclass and its schema),
one `conf/relaxation/<name>.yaml` and one import below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from nasctl.config import validate
from nasctl.errors import NasctlError
from nasctl.relaxations import darts, drnas, gdas, pc_darts  # noqa: F401  (register)
from nasctl.relaxations.base import RELAXATIONS, CellMix, EdgeMix, Params, Relaxation

if TYPE_CHECKING:
    from nasctl.spaces.base import NodeEdges

__all__ = ["RELAXATIONS", "CellMix", "EdgeMix", "Params", "Relaxation", "build_relaxation"]


def build_relaxation(node: Any, node_edges: NodeEdges) -> Relaxation:
    """The registered relaxation `node.name` (typed, complete, range-checked); a run without one is DARTS."""
    node = node if node is not None else {"name": "darts"}
    d = RELAXATIONS.get(node["name"])
    what = f"relaxation '{node['name']}'"
    cfg = validate(node, d.schema, what)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise NasctlError(f"Invalid {what} config: missing {', '.join(missing)} (see conf/relaxation/{node['name']}.yaml).")
    return d.cls(OmegaConf.to_object(cfg), node_edges)
