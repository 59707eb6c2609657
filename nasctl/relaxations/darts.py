"""DARTS (Liu et al., ICLR 2019): softmax(alpha) over every edge's candidates, all of them evaluated.

The protocol's defaults are this relaxation (`nasctl/relaxations/base.py`); it only registers them.
"""

from __future__ import annotations

from nasctl.relaxations.base import RELAXATIONS, Relaxation, RelaxationConfig, RelaxationDef

RELAXATIONS.register("darts")(RelaxationDef(RelaxationConfig, Relaxation))
