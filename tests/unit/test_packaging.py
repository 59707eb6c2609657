"""A non-editable install (`pip install .`) ships every package and the whole config tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_lists_every_package_and_the_conf_tree() -> None:
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nasctl").rglob("__init__.py")}
    assert listed == found | {"nasctl.conf"}


@pytest.mark.slow
def test_the_wheel_carries_conf_as_nasctl_conf_and_the_kernel_source(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                          "-w", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("nasctl-*.whl")
    shipped = {n.removeprefix("nasctl/conf/") for n in zipfile.ZipFile(wheel).namelist() if n.startswith("nasctl/conf/")}
    assert shipped == {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert "nasctl/spaces/depthwise.cpp" in zipfile.ZipFile(wheel).namelist()  # the kernel's source, built on first use
