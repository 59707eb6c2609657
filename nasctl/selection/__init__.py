"""Selection rules of `nasctl derive`, registered by name (`selection=<name>`).

`argmax` (the default) is the space's own derive rule on the recorded architecture parameters, in
`nasctl/derive.py`; the registered rules select otherwise, e.g. `darts_pt` (DARTS-PT) on the trained supernet.
"""

from __future__ import annotations

from nasctl.selection import darts_pt  # noqa: F401  (registers darts_pt)
from nasctl.selection.base import SELECTIONS, Selection

__all__ = ["SELECTIONS", "Selection"]
