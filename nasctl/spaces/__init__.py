"""Search spaces, registered by name; `create_supernet` builds one from its config."""

from __future__ import annotations

from typing import Any

from nasctl.config import validate
from nasctl.spaces import (
    darts,  # noqa: F401  (registers darts, s1-s4)
    nb201,  # noqa: F401  (registers nb201)
)
from nasctl.spaces.base import SPACES, MixedOp, Space, Supernet

__all__ = ["SPACES", "MixedOp", "Space", "Supernet", "create_supernet", "space_config"]


def space_config(cfg: Any) -> tuple[Space, Any]:
    """The registered space named by `cfg.name` and `cfg` validated against its schema."""
    space = SPACES.get(cfg.name)
    return space, validate(cfg, space.schema, f"space '{cfg.name}'")


def create_supernet(cfg: Any, num_classes: int, in_channels: int) -> Supernet:
    space, scfg = space_config(cfg)
    return space.build(scfg, num_classes, in_channels)
