"""Search spaces, registered by name; `space_config` finds one and validates its config."""

from __future__ import annotations

from typing import Any

from nasctl.config import validate
from nasctl.spaces import (
    darts,  # noqa: F401  (registers darts, s1-s4)
    nb201,  # noqa: F401  (registers nb201)
)
from nasctl.spaces.base import SPACES, MixedOp, Space, Supernet

__all__ = ["SPACES", "MixedOp", "Space", "Supernet", "space_config"]


def space_config(cfg: Any) -> tuple[Space, Any]:
    """The registered space named by `cfg.name` and `cfg` validated against its schema."""
    space = SPACES.get(cfg.name)
    return space, validate(cfg, space.schema, f"space '{cfg.name}'")

