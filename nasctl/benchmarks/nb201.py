"""NAS-Bench-201 lookup: test accuracy (%) after the benchmark's 200-epoch training, by arch string.

Reads the CSV export of the NATS-Bench topology space (columns below; one row per architecture,
15,625 rows) or, through the optional `nats_bench` package, an official NATS-Bench file
(`NATS-tss-v1_0-3ffb9.pickle.pbz2`, or its `-simple` directory), queried as
`get_more_info(index, dataset, hp="200", is_random=False)["test-accuracy"]`.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nasctl.errors import NasctlError

DATASETS = ("cifar10", "cifar100", "imagenet16_120")
CSV_COLUMNS = {  # our dataset name -> column of the CSV table
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16_120": "ImageNetTestAccuracy200Epochs",
}
NATS_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16_120": "ImageNet16-120"}
ARCH_COLUMN = "ArchitectureString"
NUM_ARCHS = 5**6  # 5 ops on each of 6 edges


class Nb201Table:
    """Test accuracies of NAS-Bench-201 architectures; `rows` maps an arch string to one per dataset."""

    def __init__(self, path: Path, rows: Mapping[str, tuple[float, ...]]) -> None:
        self.path, self.rows = path, rows

    def __len__(self) -> int:
        return len(self.rows)

    def accuracies(self, arch: str) -> dict[str, float]:
        """{"cifar10": %, "cifar100": %, "imagenet16_120": %} of one arch string."""
        try:
            return dict(zip(DATASETS, self.rows[arch]))
        except KeyError:
            raise NasctlError(
                f"{arch!r} is not an architecture of the NAS-Bench-201 table {self.path}: expected a string "
                "like |nor_conv_3x3~0|+|skip_connect~0|none~1|+|...~0|...~1|...~2| over the ops "
                "none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3."
            ) from None


def read_csv(path: Path) -> dict[str, tuple[float, ...]]:
    """The rows of the CSV table; wrong columns, numbers or row count are a NasctlError naming the file."""
    try:
        return _read_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise NasctlError(f"{path} is not a readable CSV table: {exc}.") from None


def _read_csv(path: Path) -> dict[str, tuple[float, ...]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        wanted = [*CSV_COLUMNS.values(), ARCH_COLUMN]
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            raise NasctlError(
                f"{path} is not a NAS-Bench-201 accuracy table: it lacks the column(s) {', '.join(missing)} "
                f"(found {', '.join(reader.fieldnames or []) or 'no header'})."
            )
        rows: dict[str, tuple[float, ...]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                rows[row[ARCH_COLUMN]] = tuple(float(row[CSV_COLUMNS[d]]) for d in DATASETS)
            except (TypeError, ValueError):
                raise NasctlError(f"{path}, line {line}: cannot read the accuracies of {row[ARCH_COLUMN]!r}.") from None
    if len(rows) != NUM_ARCHS:
        raise NasctlError(
            f"{path} holds {len(rows)} distinct architectures; a NAS-Bench-201 table has {NUM_ARCHS}. "
            "The file is truncated or not the benchmark's table."
        )
    return rows


class NatsRows(Mapping[str, tuple[float, ...]]):
    """The rows of an official NATS-Bench topology file, queried lazily through its API."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def __getitem__(self, arch: str) -> tuple[float, ...]:
        index = self.api.query_index_by_arch(arch)
        if index < 0:
            raise KeyError(arch)
        infos = (self.api.get_more_info(index, NATS_DATASETS[d], hp="200", is_random=False) for d in DATASETS)
        return tuple(float(info["test-accuracy"]) for info in infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self.api.meta_archs)

    def __len__(self) -> int:
        return len(self.api)


def read_nats(path: Path) -> NatsRows:
    try:
        import nats_bench
    except ImportError:
        raise NasctlError(
            f"{path} is not a .csv table, so it is read as an official NATS-Bench file, which needs the "
            "optional nats_bench package: pip install nasctl[nats] (or point paths.nb201 at the CSV table)."
        ) from None
    try:
        return NatsRows(nats_bench.create(str(path), "tss", fast_mode=path.is_dir(), verbose=False))
    except Exception as exc:  # noqa: BLE001  (the API raises assorted types for a wrong file)
        raise NasctlError(f"nats_bench cannot read {path} as the NATS-Bench topology benchmark: {exc}") from None


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> Nb201Table:
    if not path.exists():
        raise NasctlError(
            f"NAS-Bench-201 table {path} does not exist. Set paths.nb201=<file> (or $NASCTL_NB201) to the "
            "benchmark's CSV table or an official NATS-Bench topology file."
        )
    return Nb201Table(path, read_csv(path) if path.suffix.lower() == ".csv" else read_nats(path))


def load_table(path: str | Path) -> Nb201Table:
    """The table at `path` (CSV, or an official NATS-Bench file via nats_bench), read once per path."""
    return _load(Path(path).expanduser().resolve())
