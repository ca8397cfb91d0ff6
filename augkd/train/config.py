"""The train config as typed values: ``configs/train/*.yaml`` resolved by hydra, parsed once into frozen dataclasses.

Each section checks its own fields when parsed (a one-line ``ConfigError`` naming the key); ``TrainConfig.from_dict``
adds the checks that span sections. ``TrainConfig.values`` keeps the resolved mapping it was parsed from: that is
what ``config.json`` holds and what a resumed run is compared with, so both stay as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from augkd.errors import ConfigError
from augkd.mixers.config import MixerConfig
from augkd.mixers.sources import check_mixture_config
from augkd.train.jitter import OnlineJitterConfig

SCHEDULERS = ("constant", "exponential", "step", "plateau")
BEST_METRICS = {"energy_mae": False, "force_mae": False, "force_cos": True, "efwt": True}  # name -> higher is better


def _section(cls, values: Mapping[str, Any] | None, name: str):
    """``cls`` from the mapping of section ``name``: missing keys take their defaults, unknown keys are refused."""
    values = dict(values or {})
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown {name} key(s) {unknown} (known: {sorted(known)})")
    return cls(**values)


@dataclass(frozen=True)
class InitConfig:
    """Fine-tuning: start from another model's weights."""

    checkpoint: str | None = None  # an augkd model checkpoint, or a run's last.pt (its EMA weights)
    normalizer: bool = False  # also take its energy/force normaliser


@dataclass(frozen=True)
class ModelConfig:
    name: str = "painn-small"  # a name of augkd.models.registry
    overrides: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments of the model's constructor


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from (``augkd.mixers.sources`` reads train/synthetic/sources) and how energies are
    referenced (``augkd.element_refs``)."""

    train: list[str] = field(default_factory=list)  # dataset directories, one source per recorded origin
    synthetic: list[str] = field(default_factory=list)  # directories of one more source, origin 'synthetic'
    sources: list[Mapping[str, Any]] = field(default_factory=list)  # [{path, origin?, alpha?}]
    val: list[str] = field(default_factory=list)
    element_refs: str = "fit"  # fit | none | FILE
    predict_origin: str | None = None  # the scale predictions take (None: chosen from the mixer and sources)

    def __post_init__(self) -> None:
        refs = self.element_refs
        if refs not in ("fit", "none") and not Path(str(refs)).is_file():
            raise ConfigError(f"data.element_refs {refs!r} is neither fit, none nor an element-references file")

    def mixture_sources(self) -> dict[str, Any]:
        """The keys ``augkd.mixers`` reads (``train``, ``synthetic``, ``sources``)."""
        return {"train": list(self.train), "synthetic": list(self.synthetic), "sources": list(self.sources)}


@dataclass(frozen=True)
class LossConfig:
    energy_coef: float = 1.0  # α_E
    force_coef: float = 100.0  # α_F


@dataclass(frozen=True)
class TeacherConfig:
    mode: str = "none"  # none | cached | online
    spec: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    uncached: str = "skip"  # cached mode, rows without cached outputs: skip | online

    def __post_init__(self) -> None:
        if self.mode not in ("none", "cached", "online"):
            raise ConfigError(f"teacher.mode {self.mode!r} is not none, cached or online")
        if self.mode == "online" and not self.spec:
            raise ConfigError("teacher.mode=online needs teacher.spec (e.g. --teacher ckpt:teacher.pt)")
        if self.uncached not in ("skip", "online"):
            raise ConfigError(f"teacher.uncached {self.uncached!r} is not skip or online")
        if self.mode == "cached" and self.uncached == "online" and not self.spec:
            raise ConfigError("teacher.uncached=online needs teacher.spec, the teacher that labels uncached rows")

    @property
    def fills_uncached(self) -> bool:
        """Cached mode with the teacher labelling the rows that have no cached outputs."""
        return self.mode == "cached" and self.uncached == "online"

    @property
    def runs_online(self) -> bool:
        """A live teacher is loaded (online mode, or cached mode that fills uncached rows)."""
        return self.mode == "online" or self.fills_uncached

    def teacher_spec(self):
        """The ``TeacherSpec`` of ``spec`` and ``kwargs``."""
        from augkd.teachers import TeacherSpec

        return TeacherSpec(self.spec, self.kwargs)


@dataclass(frozen=True)
class KDConfig:
    losses: list[Mapping[str, Any]] = field(default_factory=list)  # [{name, lambda}], lambda a number or 'auto'
    auto_lambda: float | None = None  # fraction: λ·L_KD starts at this fraction of L0


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1.0e-4
    weight_decay: float = 0.0
    amsgrad: bool = True
    warmup_steps: int = 0
    scheduler: str = "constant"  # constant | exponential | step | plateau
    gamma: float = 0.99  # exponential: per 100 steps; step and plateau: factor
    step_size: int = 1000  # step scheduler
    patience: int = 3  # plateau: validations without improvement
    grad_clip: float = 10.0
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r} is not one of {SCHEDULERS}")


_SECTIONS = {
    "init": InitConfig, "model": ModelConfig, "data": DataConfig, "mixer": MixerConfig, "loss": LossConfig,
    "teacher": TeacherConfig, "kd": KDConfig, "jitter": OnlineJitterConfig, "optim": OptimConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """The resolved ``configs/train/*.yaml`` (see there for every key's meaning), one typed value per section."""

    steps: int
    batch_size: int
    seed: int = 0
    eval_every: int = 200
    checkpoint_every: int = 200
    best_metric: str = "energy_mae"
    device: str | None = "auto"
    init: InitConfig = field(default_factory=InitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mixer: MixerConfig = field(default_factory=MixerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    jitter: OnlineJitterConfig = field(default_factory=OnlineJitterConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: the resolved mapping this was parsed from: ``config.json``, resume comparisons, hydra round trips
    values: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, key: str) -> Any:
        """The plain resolved mapping's section or value (``config["optim"]["lr"]``), as ``config.json`` holds it."""
        return self.values[key]

    def to_dict(self) -> dict[str, Any]:
        """A copy of the resolved mapping (what ``config.json`` holds)."""
        return copy.deepcopy(self.values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Parse and check the resolved config; ``ConfigError`` (one line) names the first bad key."""
        values = copy.deepcopy(dict(values))
        scalars = {f.name for f in fields(cls) if f.name not in _SECTIONS and f.name != "values"}
        unknown = sorted(set(values) - scalars - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown train config key(s) {unknown}")
        missing = [f.name for f in fields(cls) if f.name in scalars and f.default is MISSING and f.name not in values]
        if missing:
            raise ConfigError(f"the train config has no {', '.join(missing)}")
        if values["steps"] <= 0 or values["batch_size"] <= 0:
            raise ConfigError(f"steps={values['steps']} and batch_size={values['batch_size']} must be > 0")
        optim = _section(OptimConfig, values.get("optim"), "optim")
        if values.get("best_metric", "energy_mae") not in BEST_METRICS:
            raise ConfigError(f"best_metric {values['best_metric']!r} is not one of {sorted(BEST_METRICS)}")
        teacher = _section(TeacherConfig, values.get("teacher"), "teacher")
        kd = _section(KDConfig, values.get("kd"), "kd")
        if kd.losses and teacher.mode == "none":
            raise ConfigError("KD losses need a teacher: set teacher.mode to cached or online")
        data_values = values.get("data") or {}
        mixer = check_mixture_config(data_values, values.get("mixer"))
        data = _section(DataConfig, data_values, "data")
        jitter = OnlineJitterConfig.from_dict(values.get("jitter"))
        if jitter.enabled and teacher.mode != "online":
            raise ConfigError("jitter needs teacher.mode=online: only a live teacher can label the displaced copies")
        sections = {
            "init": _section(InitConfig, values.get("init"), "init"),
            "model": _section(ModelConfig, values.get("model"), "model"),
            "loss": _section(LossConfig, values.get("loss"), "loss"),
        }
        return cls(
            **{key: values[key] for key in scalars if key in values}, data=data, mixer=mixer, teacher=teacher,
            kd=kd, jitter=jitter, optim=optim, values=values, **sections,
        )
