"""nasctl: an experiment runner for stabilized differentiable architecture search."""

from pathlib import Path

__version__ = "0.1.0"


def conf_dir() -> Path:
    """The config tree: `conf/` of a source checkout, or the copy packaged as `nasctl/conf`."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here / "conf"):
        if (cand / "search.yaml").is_file():
            return cand
    raise RuntimeError(f"nasctl's config tree was not found next to {here}")
