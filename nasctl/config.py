"""Structured-config schemas: a typo in a key or a wrong type fails before any work starts.

Defaults live in `conf/`; these dataclasses only fix the shape and the types, so every value
is MISSING here except the keys in OPTION_KEYS, which only some options of a group set (None =
unused). tests/unit/test_config.py holds both rules. Groups whose shape depends on the option
chosen (space, stabilizer) are validated by their own module.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nasctl import conf_dir
from nasctl.errors import NasctlError


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = MISSING  # directory holding the dataset's files in their usual on-disk format
    download: bool = MISSING  # fetch with torchvision when missing (needs internet)
    num_classes: int = MISSING
    channels: int = MISSING
    size: int = MISSING  # side of the (square) training images
    mean: list[float] = MISSING
    std: list[float] = MISSING
    subset: Optional[int] = MISSING  # keep only the first N training images (quick runs)
    test_subset: Optional[int] = MISSING  # keep only the first N test images
    # dataset=synthetic only: the dataset it takes its shape from, its split sizes, the seed it is drawn from
    shape_of: Optional[str] = None
    train_images: Optional[int] = None
    test_images: Optional[int] = None
    seed: Optional[int] = None


@dataclass
class AugmentConfig:
    crop_padding: int = MISSING  # random crop with this zero padding; 0 = off
    flip: bool = MISSING  # random horizontal flip
    cutout: int = MISSING  # cutout square side; 0 = off


@dataclass
class SpeedSwitches:
    """What the `auto` value of each speed switch means on one kind of device."""

    precision: str = MISSING
    tf32: bool = MISSING
    channels_last: bool = MISSING
    compile: Any = MISSING  # true | false | regional (OmegaConf cannot merge a Union inside a dict of dataclasses)
    cuda_graphs: bool = MISSING
    fused_optimizer: bool = MISSING


@dataclass
class TrainerConfig:
    device: str = MISSING  # auto | cpu | cuda
    # Speed switches (docs/performance.md); `auto` = the value in `auto.<device type>`.
    precision: str = MISSING  # fp32 | bf16 (autocast) | auto
    tf32: Union[bool, str] = MISSING  # TF32 in CUDA matmuls and convolutions (fp32 inputs rounded to 10 bits)
    channels_last: Union[bool, str] = MISSING  # NHWC weights and activations
    compile: Union[bool, str] = MISSING  # torch.compile: true (whole model) | regional (repeated blocks) | false
    cuda_graphs: Union[bool, str] = MISSING  # compile with mode=reduce-overhead (CUDA graphs); needs compile
    fused_optimizer: Union[bool, str] = MISSING  # fused SGD/Adam kernels
    auto: dict[str, SpeedSwitches] = field(default_factory=dict)  # per device type: cpu, cuda
    log_every: int = MISSING  # steps between host syncs for the progress bar
    progress: bool = MISSING
    checkpoint_every_steps: int = MISSING  # 0 = once per epoch
    tensorboard: bool = MISSING  # event files in the run directory


@dataclass
class EpochParams:
    """What search and retrain both schedule: epochs, batches, clipping, quick-run caps, augmentation."""

    epochs: int = MISSING
    batch_size: int = MISSING
    grad_clip: float = MISSING
    steps_per_epoch: Optional[int] = MISSING  # cap the steps of an epoch (quick runs); null = all
    eval_batches: Optional[int] = MISSING  # cap the batches of the per-epoch evaluation
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class SearchParams(EpochParams):
    train_portion: float = MISSING
    order: str = MISSING  # first | second
    w_lr: float = MISSING
    w_lr_min: float = MISSING
    w_momentum: float = MISSING
    w_weight_decay: float = MISSING
    w_nesterov: bool = MISSING
    arch_lr: float = MISSING
    arch_betas: list[float] = MISSING
    arch_weight_decay: float = MISSING
    drop_path: float = MISSING  # RobustDARTS: drop-path on whole mixed edges, prob drop_path*e/(E-1)


@dataclass
class DiagnosticsConfig:
    hessian_every: int = MISSING  # epochs between dominant-eigenvalue computations; 0 = off
    hessian_method: str = MISSING  # exact | power


@dataclass
class PathsConfig:
    """Where runs, datasets and benchmark tables live (conf/paths/default.yaml)."""

    run_root: str = MISSING  # run directories: <run_root>/<stage>/<time>-<id>/
    data: str = MISSING  # datasets: <data>/<name>
    nb201: Optional[str] = MISSING  # path of the NAS-Bench-201 accuracy table (CSV or .pickle); null = no lookup


@dataclass
class RunConfig:
    """What every stage that trains (search, retrain) has: seed, run store, data, trainer."""

    seed: int = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    resume: Any = MISSING  # false | true (latest interrupted run) | a run directory
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


@dataclass
class SearchConfig(RunConfig):
    space: Any = MISSING
    relaxation: Any = MISSING  # validated by nasctl/relaxations against the chosen relaxation's schema
    stabilizer: dict[str, Any] = field(default_factory=dict)
    search: SearchParams = field(default_factory=SearchParams)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)


@dataclass
class DeriveConfig:
    run: str = MISSING  # latest | a search run directory
    paths: PathsConfig = field(default_factory=PathsConfig)
    epoch: Optional[int] = MISSING  # derive from this epoch's alphas instead of the last
    selection: Any = MISSING  # conf/selection/<name>.yaml: argmax (the space's rule) | darts_pt


@dataclass
class NetConfig:
    C: int = MISSING  # initial channels
    layers: int = MISSING  # cells
    stem: str = MISSING  # cifar (3x3 conv to 3C) | imagenet (three stride-2 convs, /8)


@dataclass
class RetrainParams(EpochParams):
    lr: float = MISSING
    lr_schedule: str = MISSING  # cosine (to lr_min) | step (lr * lr_gamma^epoch)
    lr_min: float = MISSING
    lr_gamma: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    label_smoothing: float = MISSING
    auxiliary_weight: float = MISSING  # weight of the auxiliary head's loss; 0 = no auxiliary head
    drop_path: float = MISSING  # drop-path probability, ramped drop_path * epoch / epochs
    workers: int = MISSING  # DataLoader workers for datasets read from disk (ImageNet)
    net: NetConfig = field(default_factory=NetConfig)


@dataclass
class RetrainConfig(RunConfig):
    genotype: str = MISSING  # zoo name | latest | genotype file | search run directory | literal
    retrain: RetrainParams = field(default_factory=RetrainParams)


@dataclass
class LatencyConfig:
    warmup: int = MISSING  # untimed forward passes first
    repeats: int = MISSING  # timed forward passes; the median is reported


@dataclass
class EvaluateConfig:
    run: Optional[str] = MISSING  # latest | a retrain run directory; null = score `genotype` untrained
    paths: PathsConfig = field(default_factory=PathsConfig)
    checkpoint: str = MISSING  # best | last | a checkpoint file
    genotype: Optional[str] = MISSING  # as retrain's genotype=, used without a run
    space: Any = None  # the space `genotype` belongs to (space=nb201: look it up in the benchmark)
    output: str = MISSING  # table | json
    batch_size: int = MISSING  # batch of the test pass and of the batch-N latency
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    retrain: RetrainParams = field(default_factory=RetrainParams)  # its `net` builds the network without a run
    latency: LatencyConfig = field(default_factory=LatencyConfig)


@dataclass
class ReportConfig:
    dir: str = MISSING  # latest | a sweep directory | a search run directory
    paths: PathsConfig = field(default_factory=PathsConfig)
    out: Optional[str] = MISSING  # where the table and plots go; null = <dir>/report
    plots: bool = MISSING
    curves: list[str] = MISSING  # metrics.jsonl keys plotted over epochs, one line per method
    baseline: Optional[str] = MISSING  # the method every other is paired with, seed by seed; null = no pairing


@dataclass
class BenchCase:
    stage: str = MISSING  # search | retrain: whose step is timed
    overrides: list[str] = MISSING  # on top of the stage's shared overrides


@dataclass
class BenchConfig:
    device: str = MISSING  # auto | cpu | cuda
    threads: Optional[int] = MISSING  # torch.set_num_threads for CPU timing; null = torch's default
    search: list[str] = MISSING  # overrides of `nasctl search` shared by the search cases
    retrain: list[str] = MISSING  # overrides of `nasctl retrain` shared by the retrain cases
    dataset: Any = None  # the `dataset=` group chosen for every case (e.g. synthetic); null = the cases' own
    cases: dict[str, BenchCase] = field(default_factory=dict)
    baseline: list[str] = MISSING  # trainer overrides of the eager fp32 baseline, under every variant
    variants: dict[str, list[str]] = field(default_factory=dict)  # name: trainer overrides; ratios vs `eager`
    skip: list[str] = MISSING  # case or variant names not to run
    warmup: int = MISSING  # untimed steps per (case, variant) first; compiling happens here
    steps: int = MISSING  # timed steps per round
    rounds: int = MISSING  # rounds over all variants, interleaved; the median round counts
    output: str = MISSING  # JSON file of the results
    original: Optional[str] = MISSING  # a checkout of quark0/darts: its first-order step timed beside nasctl's


# Keys that only some options of their group set (the rest leave the schema's None = unused).
OPTION_KEYS = ("DatasetConfig.shape_of", "DatasetConfig.train_images", "DatasetConfig.test_images", "DatasetConfig.seed",
               "EvaluateConfig.space", "BenchConfig.dataset")


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore; primary YAML files name them first."""
    cs = ConfigStore.instance()
    cs.store(name="search_schema", node=SearchConfig)
    cs.store(name="derive_schema", node=DeriveConfig)
    cs.store(name="retrain_schema", node=RetrainConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="report_schema", node=ReportConfig)
    cs.store(name="bench_schema", node=BenchConfig)


def validate(node: DictConfig | dict, schema: type, what: str) -> Any:
    """Merge a config node into a dataclass schema; unknown keys or wrong types are a NasctlError."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except Exception as exc:  # omegaconf raises several types; all mean "bad config"
        raise NasctlError(f"Invalid {what} config: {exc}".replace("\n", " ")) from None


# Images per split of the datasets `dataset=synthetic` can take its shape from (`dataset.shape_of`).
SPLIT_IMAGES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "svhn": (73_257, 26_032),
                "fashion_mnist": (60_000, 10_000), "imagenet16_120": (151_700, 6_000)}


def shape_of(key: str, *, _parent_: DictConfig) -> Any:
    """`${nasctl_shape_of:KEY}`: KEY (num_classes, size, ..., train_images) of the dataset named by `shape_of`."""
    name = _parent_.shape_of
    if name not in SPLIT_IMAGES:
        raise NasctlError(f"dataset.shape_of={name} is not one of {', '.join(SPLIT_IMAGES)}.")
    if key in ("train_images", "test_images"):
        return SPLIT_IMAGES[name][key == "test_images"]
    return OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml")[key]


def _uid() -> str:
    return uuid.uuid4().hex[:6]


# Cached per config (and copied into every job's config by Hydra's launchers, like `${now:}`),
# so all jobs of one multirun, and a requeued SLURM job, share one sweep directory.
if not OmegaConf.has_resolver("nasctl_uid"):
    OmegaConf.register_new_resolver("nasctl_uid", _uid, use_cache=True)
if not OmegaConf.has_resolver("nasctl_shape_of"):
    OmegaConf.register_new_resolver("nasctl_shape_of", shape_of)


@dataclass(frozen=True)
class Range:
    """The values a numeric key allows: from `low` to `high` (None = unbounded), each end closed or open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


COUNT, NONNEG, POSITIVE = Range(1), Range(0), Range(0, low_open=True)
PROB, PORTION, MOMENTUM = Range(0, 1, high_open=True), Range(0, 1, True, True), Range(0, 1, high_open=True)

# Every numeric key whose value torch, the data or the schedules would misread or refuse late; a stage
# checks the keys its config has (a list: each element) before any work starts.
RANGES: dict[str, Range] = {
    "dataset.subset": COUNT, "dataset.test_subset": COUNT,
    **{f"{stage}.{key}": r for stage in ("search", "retrain") for key, r in {
        "epochs": COUNT, "batch_size": COUNT, "grad_clip": POSITIVE, "steps_per_epoch": COUNT, "eval_batches": COUNT,
        "augment.crop_padding": NONNEG, "augment.cutout": NONNEG, "drop_path": PROB}.items()},
    "search.train_portion": PORTION, "search.w_lr": POSITIVE, "search.w_lr_min": NONNEG,
    "search.w_momentum": MOMENTUM, "search.w_weight_decay": NONNEG, "search.arch_lr": NONNEG,
    "search.arch_betas": Range(0, 1, high_open=True), "search.arch_weight_decay": NONNEG,
    "retrain.lr": POSITIVE, "retrain.lr_min": NONNEG, "retrain.lr_gamma": Range(0, 1, low_open=True),
    "retrain.momentum": MOMENTUM, "retrain.weight_decay": NONNEG, "retrain.label_smoothing": PROB,
    "retrain.auxiliary_weight": NONNEG, "retrain.workers": NONNEG, "retrain.net.C": COUNT, "retrain.net.layers": COUNT,
    "trainer.log_every": COUNT, "trainer.checkpoint_every_steps": NONNEG, "diagnostics.hessian_every": NONNEG,
    "batch_size": COUNT, "latency.warmup": NONNEG, "latency.repeats": COUNT,
    "stabilizer.sdarts_rs.epsilon": NONNEG, "stabilizer.sdarts_rs.epsilon_start": NONNEG,
    "stabilizer.sdarts_adv.epsilon": NONNEG, "stabilizer.sdarts_adv.epsilon_start": NONNEG,
    "stabilizer.sdarts_adv.steps": COUNT, "stabilizer.sdarts_adv.step_scale": POSITIVE,
    "stabilizer.beta_decay.lambda_max": NONNEG, "stabilizer.beta_decay.ramp_epochs": COUNT,
    "stabilizer.amended.eta": NONNEG, "stabilizer.amended.cg_steps": COUNT,
    "stabilizer.darts_minus.beta0": NONNEG, "stabilizer.noisy.factor": NONNEG, "stabilizer.noisy.drop_path": PROB,
    "relaxation.kl_scale": NONNEG, "relaxation.tau_max": POSITIVE, "relaxation.tau_min": POSITIVE,
    "relaxation.partial_channels": COUNT, "relaxation.warmup": PROB,
}


def check_ranges(cfg: DictConfig) -> None:
    """Refuse, naming the key and its range, the first value in `cfg` outside its RANGES entry."""
    for key, allowed in RANGES.items():
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except Exception:  # noqa: BLE001  (a path through a list, e.g. bench's `search:` overrides)
            continue
        values = list(value) if OmegaConf.is_list(value) else [value]
        for i, v in enumerate(values):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v not in allowed:
                name = f"{key}[{i}]" if OmegaConf.is_list(value) else key
                raise NasctlError(f"{name} must be {allowed}, got {v}.")
