"""Run directories: manifest, metrics, atomic checksummed checkpoints, and `run=latest`.

A run directory is Hydra's output directory. Files are written to a temporary file in the
same directory, fsynced and renamed, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import nasctl
from nasctl.errors import NasctlError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
ROTATING = ("last.pt", "prev.pt")  # the checkpoint a resume continues from, and the one before it
PENDING = "checkpoint_pending"  # manifest key: the SHA-256 of the checkpoint being written


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a fsynced temporary file in the same directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(nasctl.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    """One run directory of a stage (`search`, `retrain`, ...)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._last_sha: str | None = None  # SHA-256 of last.pt as this process wrote or loaded it

    # -- manifest -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, kind: str, seed: int, overrides: list[str], config: dict) -> Run:
        """Start a new run: write its composed config and its manifest with status `running`."""
        run = cls(path)
        atomic_write(run.path / "config.yaml", OmegaConf.to_yaml(config).encode())
        run.write_manifest(
            {
                "kind": kind,
                "status": "running",
                "command": sys.argv,
                "overrides": overrides,
                "seed": seed,
                "git_commit": _git_commit(),
                "versions": {
                    "nasctl": nasctl.__version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
                "started": time.time(),
                "checkpoints": {},
            }
        )
        return run

    @property
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise NasctlError(f"{self.path} is not a readable nasctl run ({MANIFEST}: {exc}).") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())

    @property
    def config(self) -> DictConfig:
        """The composed config the run was started with."""
        return OmegaConf.load(self.path / "config.yaml")

    def resume_config(self, cfg: DictConfig) -> DictConfig:
        """The run's own config for a resume; only `trainer` and `resume` come from the new command."""
        stored = self.config
        stored.trainer, stored.resume = cfg.trainer, cfg.resume
        return stored

    def resumable(self, resume: Any) -> bool:
        """Whether `resume=` should continue this run: a completed run is kept as it is, skipped under
        `resume=true` (a re-run sweep) and refused when named explicitly."""
        manifest = self.manifest
        if manifest.get("status") != "completed":
            return True
        kind = manifest.get("kind", "run")
        if resume is True:
            log.info("%s is a completed %s; kept as it is.", self.path, kind)
            return False
        raise NasctlError(f"{self.path} is a completed {kind}; nothing to resume (its results are kept as they are).")

    def update(self, **fields: Any) -> None:
        manifest = {**self.manifest, **fields}
        if fields.get("status") == "running":  # a resumed run: the last stop's reason no longer applies
            manifest.pop("reason", None)
        self.write_manifest(manifest)

    def finish(self, status: str, **fields: Any) -> None:
        self.update(status=status, ended=time.time(), **fields)

    # -- metrics --------------------------------------------------------------------------
    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl and flush it to disk."""
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, epoch: int) -> None:
        """Keep only the metrics of epochs before `epoch` (a resumed run repeats the rest)."""
        kept = [r for r in self.metrics() if r.get("epoch", 0) < epoch]
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept).encode())

    def metrics(self) -> list[dict[str, Any]]:
        """The metrics lines; a last line cut short by a kill is dropped (its epoch runs again)."""
        p = self.path / "metrics.jsonl"
        records = []
        for line in (p.read_text().splitlines() if p.exists() else []):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records

    # -- checkpoints ----------------------------------------------------------------------
    # A kill at any point of a save leaves a checkpoint that loads. The new file's SHA-256 is recorded
    # as pending first, then last.pt is moved to prev.pt, the new file written and its SHA-256
    # recorded. A file is trusted when the manifest records (or has pending) its SHA-256 under its
    # name, or for last.pt and prev.pt under either of the two: the old last.pt, now prev.pt, loads.
    def save_checkpoint(self, state: dict[str, Any], name: str = "last.pt") -> Path:
        """Atomically write a checkpoint, keep the previous one as `prev.pt`, record both SHA-256s."""
        buf = io.BytesIO()
        torch.save(state, buf)
        data, path = buf.getvalue(), self.ckpt_dir / name
        manifest = {**self.manifest, PENDING: {name: sha256(data)}}
        self.write_manifest(manifest)
        sums = manifest.get("checkpoints", {})
        if name == "last.pt" and self._last_sha and path.exists():  # only a last.pt known good becomes prev.pt
            os.replace(path, self.ckpt_dir / "prev.pt")
            sums["prev.pt"] = self._last_sha
        atomic_write(path, data)
        sums[name] = manifest.pop(PENDING)[name]
        self.write_manifest({**manifest, "checkpoints": sums})
        if name == "last.pt":
            self._last_sha = sums[name]
        return path

    def load_checkpoint(self, name: str = "last.pt", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Load a checkpoint whose SHA-256 the manifest records (for last/prev: either's); otherwise refuse it."""
        path = self.ckpt_dir / name
        if not path.is_file():
            raise NasctlError(f"Checkpoint {path} does not exist.")
        data = path.read_bytes()
        manifest = self.manifest
        sums, pending = manifest.get("checkpoints", {}), manifest.get(PENDING, {})
        names = ROTATING if name in ROTATING else (name,)
        if sha256(data) not in {d.get(n) for d in (sums, pending) for n in names} - {None}:
            raise NasctlError(
                f"Checkpoint {path} does not match the SHA-256 recorded in {self.path / MANIFEST} "
                "(truncated, corrupt or from another run); refusing to load it."
            )
        if name == "last.pt":
            self._last_sha = sha256(data)
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)

    def load_latest_good(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The last checkpoint, or the previous one when the last is damaged or missing; None when the run
        never recorded one (killed before its first checkpoint: it starts over in place)."""
        if not set(self.manifest.get("checkpoints", {})) & set(ROTATING):
            return None
        try:
            return self.load_checkpoint("last.pt", map_location)
        except NasctlError as first:
            if (self.ckpt_dir / "prev.pt").exists():
                return self.load_checkpoint("prev.pt", map_location)
            raise first


def runs_below(root: str | Path, kind: str) -> list[tuple[Run, dict[str, Any]]]:
    """Every run of a kind at or below `root` with its manifest, oldest first (unreadable ones skipped)."""
    runs = []
    for m in Path(root).glob(f"**/{MANIFEST}"):
        try:
            manifest = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("kind") == kind:
            runs.append((Run(m.parent), manifest))
    return sorted(runs, key=lambda rm: (rm[1].get("started", 0.0), str(rm[0].path)))


def find_runs(run_root: str | Path, kind: str) -> list[Run]:
    """All runs of a kind under `run_root/<kind>` (multirun jobs included), oldest first."""
    return [run for run, _ in runs_below(Path(run_root, kind), kind)]


def resolve_run(spec: str, run_root: str | Path, kind: str) -> Run:
    """`latest` (the most recently started run of `kind`) or a run directory of that kind."""
    if spec == "latest":
        runs = find_runs(run_root, kind)
        if not runs:
            raise NasctlError(f"run=latest: no {kind} run found under {Path(run_root, kind)}; run `nasctl {kind}` first.")
        return runs[-1]
    run = Run(Path(spec))
    if not (run.path / MANIFEST).is_file():
        raise NasctlError(f"run={spec}: {run.path} is not a nasctl run directory (no {MANIFEST}).")
    found = run.manifest.get("kind")
    if found != kind:
        raise NasctlError(f"run={spec} is a {found} run, but this command needs a {kind} run.")
    return run
