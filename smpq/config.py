"""``params.yaml`` -> frozen, typed config objects, one per section (SPEC §5).

Every field is checked on load: unknown or missing keys, wrong types and out-of-range values raise one
``ConfigError`` that names the key path and the allowed values, so a typo never runs silently. The
params file must set every key (it is the one source of truth of a run); the dataclass defaults only
serve library users who build configs in code. Optional keys (``null`` allowed) may be left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smpq.data.sources import DATASET_NAMES, missing_setting
from smpq.errors import ConfigError
from smpq.schema import as_flat_dict, in_range, load_yaml, one_of, parse_config, set_dotted

__all__ = ["Params", "as_flat_dict", "load_params"]

BIT_RANGE = (2, 16)  # bit-widths a candidate (or the fixed first/last precision) may take
SCHEDULES = ("onecycle", "cosine", "constant")
METHODS = ("smpq", "dmpq", "uniform", "dmpq_argmax", "hawq")
COMPLEXITY_FORMS = ("hinge", "ratio")  # supernet complexity losses (smpq.supernet.alpha.complexity_loss)
# The Shapley options of smpq.shapley (SPEC §3.3): estimators, the one-unit ones, values, empty groups, walks.
ESTIMATORS = ("owen", "within_group", "permutation", "exact")
DETERMINISTIC = ("within_group", "exact")
VALUES = ("neg_kl", "neg_loss", "top1")
EMPTY_GROUPS = ("reference", "zero")
DIRECTIONS = ("remove", "add")
# The models of smpq.models' registry (a test keeps the two equal; config does not import torch).
MODEL_NAMES = ("compact_resnet", "mobilenet_v2", "resnet18", "resnet20")
PRECISIONS = ("fp32", "bf16", "fp16")  # autocast dtypes of training (smpq.device)
STEP_GRADS = ("channel", "tensor")  # smpq.quant.lsq.WEIGHT_STEP_GRADS (a test keeps the two equal)
MAX_GBITOPS, MAX_SIZE_MB = 1e9, 1e9  # budget bounds, far above any real model (1e18 BitOps, 1 PB)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(default="fashion_mnist", metadata=one_of(*DATASET_NAMES))
    root: str | None = None  # folder with the raw files; None = the default lookup (SPEC §4)
    allow_download: bool = True  # torchvision download into data/raw when online (Fashion-MNIST only)
    image_size: int | None = field(default=None, metadata=in_range(8, 1024))  # image_folder only
    search_val_size: int = field(default=5000, metadata=in_range(1))
    train_size: int | None = field(default=None, metadata=in_range(1))  # None = the rest of the pool
    test_size: int | None = field(default=None, metadata=in_range(1))  # None = the whole test set

    def check(self, path: str) -> None:
        if missing := missing_setting(self.dataset, self.root, self.image_size):
            raise ConfigError(f"{path}.{missing[0]}: {missing[1]}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="compact_resnet", metadata=one_of(*MODEL_NAMES))
    pretrained: str | None = None  # local state_dict file; None = train from scratch in `pretrain`


@dataclass(frozen=True)
class TrainConfig:
    """One recipe for the shared training loop (pretraining and QAT fine-tuning)."""

    epochs: int = field(default=1, metadata=in_range(0))
    batch_size: int = field(default=128, metadata=in_range(1))
    lr: float = field(default=0.1, metadata=in_range(0.0))
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0))
    weight_decay: float = field(default=5e-4, metadata=in_range(0.0))
    nesterov: bool = True
    schedule: str = field(default="onecycle", metadata=one_of(*SCHEDULES))
    samples_per_epoch: int | None = field(default=None, metadata=in_range(1))  # None = the whole split
    augment: bool = False
    eval_batch_size: int = field(default=1024, metadata=in_range(1))  # search_val and test evaluation


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    methods: tuple[str, ...] = ("uniform",)
    seed: int | None = field(default=None, metadata=in_range(0))  # QAT's own seed; None = the run's seed
    weight_step_grad: str = field(default="channel", metadata=one_of(*STEP_GRADS))  # smpq.quant.set_weight_step_grad

    def check(self, path: str) -> None:
        if not self.methods:
            raise ConfigError(f"{path}.methods: must not be empty; allowed: {', '.join(METHODS)}")
        for method in self.methods:
            if method not in METHODS:
                raise ConfigError(f"{path}.methods: unknown method {method!r}; allowed: {', '.join(METHODS)}")


@dataclass(frozen=True)
class BitsPair:
    w_bits: int = field(default=8, metadata=in_range(*BIT_RANGE))
    a_bits: int = field(default=8, metadata=in_range(*BIT_RANGE))


@dataclass(frozen=True)
class QuantConfig:
    w_bits: tuple[int, ...] = (2, 3, 4, 8)  # weight candidates B_w
    a_bits: tuple[int, ...] = (2, 3, 4, 8)  # activation candidates B_a
    first_last: BitsPair = BitsPair()  # fixed precision of the first conv and the last linear

    def check(self, path: str) -> None:
        lo, hi = BIT_RANGE
        for kind in ("w_bits", "a_bits"):
            bits = getattr(self, kind)
            if not bits:
                raise ConfigError(f"{path}.{kind}: the candidate list is empty; give bit-widths in [{lo}, {hi}]")
            bad = [b for b in bits if not lo <= b <= hi]
            if bad:
                raise ConfigError(f"{path}.{kind}: {bad} out of range; allowed bit-widths: integers in [{lo}, {hi}]")
            if len(set(bits)) != len(bits):
                raise ConfigError(f"{path}.{kind}: duplicate candidates in {list(bits)}")


@dataclass(frozen=True)
class CalibrateConfig:
    batches: int = field(default=8, metadata=in_range(1))
    batch_size: int = field(default=128, metadata=in_range(1))
    max_activation_samples: int = field(default=200_000, metadata=in_range(1000))


@dataclass(frozen=True)
class BudgetConfig:
    """Exactly one of ``avg_bits`` (BitOps of uniform W{b}A{b}) or ``gbitops``; ``size_mb`` optional."""

    avg_bits: float | None = field(default=None, metadata=in_range(*BIT_RANGE))
    gbitops: float | None = field(default=None, metadata=in_range(0.0, MAX_GBITOPS))
    size_mb: float | None = field(default=None, metadata=in_range(0.0, MAX_SIZE_MB))

    def check(self, path: str) -> None:
        if (self.avg_bits is None) == (self.gbitops is None):
            raise ConfigError(f"{path}: give exactly one of avg_bits or gbitops (size_mb is optional)")


@dataclass(frozen=True)
class SupernetConfig:
    """DMPQ supernet training (SPEC §3.2): weights on ``train``, α on ``search_val``, alternating."""

    epochs: int = field(default=2, metadata=in_range(0))
    warmup_epochs: int = field(default=0, metadata=in_range(0))  # α frozen during these first epochs
    batch_size: int = field(default=128, metadata=in_range(1))
    samples_per_epoch: int | None = field(default=None, metadata=in_range(1))
    lr: float = field(default=0.01, metadata=in_range(0.0))  # weights and step sizes (SGD)
    momentum: float = field(default=0.9, metadata=in_range(0.0, 1.0))
    weight_decay: float = field(default=1e-4, metadata=in_range(0.0))
    alpha_lr: float = field(default=0.01, metadata=in_range(0.0))  # α (Adam)
    alpha_weight_decay: float = field(default=0.0, metadata=in_range(0.0))
    complexity_weight: float = field(default=1.0, metadata=in_range(0.0))  # λ
    complexity_form: str = field(default="hinge", metadata=one_of(*COMPLEXITY_FORMS))
    single_path: float = field(default=0.0, metadata=in_range(0.0, 1.0))  # fraction of one-candidate weight steps
    target: BudgetConfig = BudgetConfig(avg_bits=4)  # expected-BitOps target, same forms as select.budget

    def check(self, path: str) -> None:
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"{path}.warmup_epochs: {self.warmup_epochs} exceeds epochs ({self.epochs})")


@dataclass(frozen=True)
class ShapleyConfig:
    """Shapley values of the bit-width candidates on the trained supernet (SPEC §3.3)."""

    estimator: str = field(default="within_group", metadata=one_of(*ESTIMATORS))
    value: str = field(default="neg_kl", metadata=one_of(*VALUES))
    empty_group: str = field(default="reference", metadata=one_of(*EMPTY_GROUPS))
    reference_bits: int | None = field(default=None, metadata=in_range(*BIT_RANGE))  # None = full precision
    batch_size: int = field(default=256, metadata=in_range(1))  # seeded search_val batches of the game
    batches: int = field(default=8, metadata=in_range(1))
    coalitions_per_forward: int | None = field(default=None, metadata=in_range(1))  # None: auto (smpq.shapley.game)
    bn_recalibration: int = field(default=0, metadata=in_range(0))  # train batches re-estimating BN per coalition
    max_permutations: int = field(default=8, metadata=in_range(1))  # orderings of the groups (owen) or players
    tolerance: float | None = field(default=None, metadata=in_range(0.0))
    antithetic: bool = True
    truncation: float | None = field(default=None, metadata=in_range(0.0, 1.0))  # permutation only
    direction: str = field(default="remove", metadata=one_of(*DIRECTIONS))  # permutation only

    @property
    def method(self) -> dict:
        """The estimator's keyword arguments shared by ``shapley_values`` and ``sample_units``."""
        return {"estimator": self.estimator, "antithetic": self.antithetic, "direction": self.direction,
                "truncation": self.truncation}

    def check(self, path: str) -> None:
        if self.antithetic and self.max_permutations % 2 and self.estimator not in DETERMINISTIC:
            raise ConfigError(f"{path}.max_permutations: {self.max_permutations} must be even with antithetic: true "
                              "(pairs of an ordering and its reverse)")
        if self.truncation is None:
            return
        if self.estimator != "permutation" or self.direction != "remove" or self.value != "top1":
            raise ConfigError(f"{path}.truncation: only defined for estimator: permutation, direction: remove and "
                              "value: top1 (stop a permutation once the coalition's accuracy falls below "
                              "truncation·v(N)); set truncation: null")


@dataclass(frozen=True)
class HawqConfig:
    """Hessian sensitivity of the ``hawq`` method: Hutchinson traces on seeded ``search_val`` batches."""

    probes: int = field(default=4, metadata=in_range(2))  # rounds of one Rademacher probe per batch, at most
    batches: int = field(default=1, metadata=in_range(1))  # search_val batches of batch_size
    batch_size: int = field(default=256, metadata=in_range(1))
    tolerance: float | None = field(default=None, metadata=in_range(0.0))  # stop once no trace moves more


@dataclass(frozen=True)
class FanoutConfig:
    """How Shapley permutation chunks are spread out; never changes the result for a given seed."""

    chunks: int = field(default=4, metadata=in_range(1))  # seeded permutation chunks (merged exactly)
    runner: str = field(default="threads", metadata=one_of("threads", "processes", "dask"))  # Prefect flow
    workers: int = field(default=2, metadata=in_range(1))  # threads/processes, or local Dask cluster workers
    dask_address: str | None = None  # tcp://host:8786 of a running scheduler; None = local cluster


@dataclass(frozen=True)
class ScheduleConfig:  # the Prefect deployment's schedule
    cron: str = "0 3 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class SelectConfig:
    budget: BudgetConfig = BudgetConfig(avg_bits=4)


@dataclass(frozen=True)
class ReportConfig:
    title: str = "SMPQ report"


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    experiment: str = "smpq"
    uri: str | None = None  # None = sqlite file in the project; MLFLOW_TRACKING_URI overrides both
    required: bool = True  # false: an unreachable tracking store is a warning and the stage runs untracked
    timeout_s: int = field(default=5, metadata=in_range(1, 120))  # per HTTP request to a tracking server
    retries: int = field(default=2, metadata=in_range(0, 10))  # HTTP retries (backoff 1 s, 2 s, 4 s, ...)
    stale_hours: float = field(default=48.0, metadata=in_range(0.0))  # a RUNNING run older than this is dead


@dataclass(frozen=True)
class RuntimeConfig:
    """CPU kernels: ``native`` (fastest for this CPU) or ``pinned`` (the same bits on any x86-64 CPU; set before
    torch loads, by the stage entry point: stages/kernels.py). ``device``: where models, batches and the game live
    (``auto`` = CUDA when available); ``precision``: the autocast dtype of training forwards (quantizer rounding
    stays fp32, smpq.device); ``processes`` > 1 relaunches pretrain, supernet and finetune under torchrun."""

    cpu_kernels: str = field(default="native", metadata=one_of("native", "pinned"))
    threads: int | None = field(default=None, metadata=in_range(1))  # a fixed count, or None
    device: str = "auto"  # checked by check(): auto | cpu | cuda | cuda:N
    precision: str = field(default="fp32", metadata=one_of(*PRECISIONS))
    processes: int = field(default=1, metadata=in_range(1, 1024))  # that many DDP workers (stages/launch.py)
    loader_workers: int = field(default=0, metadata=in_range(0))  # 0 = batches built in process (smpq.data.loaders)

    def check(self, path: str) -> None:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"{path}.device: {self.device!r} is not a device; allowed: auto, cpu, cuda, cuda:N")


@dataclass(frozen=True)
class Params:
    seed: int = field(default=0, metadata=in_range(0))
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: TrainConfig = TrainConfig(epochs=3)
    calibrate: CalibrateConfig = CalibrateConfig()
    quant: QuantConfig = QuantConfig()
    supernet: SupernetConfig = SupernetConfig()
    shapley: ShapleyConfig = ShapleyConfig()
    hawq: HawqConfig = HawqConfig()
    fanout: FanoutConfig = FanoutConfig()
    finetune: FinetuneConfig = FinetuneConfig(lr=0.01)
    select: SelectConfig = SelectConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def check(self, path: str) -> None:
        bits = self.shapley.reference_bits
        if bits is not None and not (bits in self.quant.w_bits and bits in self.quant.a_bits):
            raise ConfigError(f"shapley.reference_bits: {bits} is not a candidate of both quant.w_bits "
                              f"{list(self.quant.w_bits)} and quant.a_bits {list(self.quant.a_bits)}; "
                              "choose one that is, or null for full precision")


def load_params(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read a params YAML file (plus optional dotted-key ``overrides``) into validated ``Params``."""
    path = Path(path)
    try:
        data = load_yaml(path) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    try:
        return parse_config(Params, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
