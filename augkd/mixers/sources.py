"""Training sources and their mixture: which datasets, of which origin, in which shares, weighed how.

Config (``configs/train/default.yaml``, sections ``data`` and ``mixer``):

- ``data.train``: dataset directories; each is grouped with the others of the same origin (its manifest's
  ``origin``, else its first row's) into one source per origin.
- ``data.synthetic``: directories of one more source whose origin is ``synthetic`` whatever their manifests say
  (the two-source shorthand ``--synthetic DIR``).
- ``data.sources``: the general form, a list of ``{path: DIR or [DIR, ...], origin: NAME, alpha: α}`` with
  ``origin`` optional (then from the manifests) and ``alpha`` given for every source or for none. CLI:
  ``--source [ORIGIN=]DIR[:ALPHA]``.
- ``mixer.alpha_target``: with two sources, one of origin ``mixer.reference_origin`` (``dft``), the other one's share
  of the draws (the paper's α_target). With no alphas at all, the shares follow the sizes (uniform over all rows).
- ``mixer.r_sdft``: the loss-weight ratio w/w_reference of every other origin; ``mixer.weight_ratios``
  ``{origin: ratio}`` sets origins one by one and wins over ``r_sdft``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from augkd.errors import ConfigError
from augkd.mixers.config import MixerConfig, share
from augkd.mixers.sampler import MixtureSampler, check_alphas
from augkd.mixers.weights import origin_weights

SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class SourceSpec:
    """A source as configured: its directories, its origin if named, its share if given."""

    paths: tuple[str, ...]
    origin: str | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class Source:
    """A resolved source: ``rows`` rows in ``paths``, all of origin ``origin``, drawn with share ``alpha``."""

    origin: str
    paths: tuple[str, ...]
    rows: int
    alpha: float


def parse_source(text: str) -> dict[str, Any]:
    """``[ORIGIN=]DIR[:ALPHA]`` (the ``--source`` flag) → a ``data.sources`` entry."""
    origin, sep, rest = text.partition("=")
    if not sep or "/" in origin:  # no origin named ('=' inside a path)
        origin, rest = "", text
    elif not origin:
        raise ConfigError(f"--source {text!r}: write ORIGIN=DIR[:ALPHA], e.g. rattle=data/rattle:0.2")
    path, colon, tail = rest.rpartition(":")
    entry: dict[str, Any] = {"path": rest}
    if colon:
        try:
            entry = {"path": path, "alpha": float(tail)}
        except ValueError:
            pass  # a ':' that belongs to the path
    if not entry["path"]:
        raise ConfigError(f"--source {text!r} names no directory")
    if origin:
        entry["origin"] = origin
    return entry


def _entry_spec(entry: Any, where: str) -> SourceSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping with 'path' (and optional 'origin', 'alpha'), got {entry!r}")
    unknown = set(entry) - {"path", "origin", "alpha"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: path, origin, alpha)")
    paths = entry.get("path")
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths or [])
    if not paths:
        raise ConfigError(f"{where} has no path")
    origin = entry.get("origin")
    if origin is not None and (not isinstance(origin, str) or not origin):
        raise ConfigError(f"{where}: origin must be a non-empty name, got {origin!r}")
    alpha = entry.get("alpha")
    if alpha is not None:
        alpha = share(alpha, f"{where}: alpha")
    return SourceSpec(tuple(str(p) for p in paths), origin, alpha)


def explicit_specs(data: Mapping[str, Any]) -> list[SourceSpec]:
    """The sources named in ``data.synthetic`` and ``data.sources`` (``data.train`` needs the manifests)."""
    specs = []
    if data.get("synthetic"):
        specs.append(SourceSpec(tuple(str(p) for p in data["synthetic"]), SYNTHETIC))
    for number, entry in enumerate(data.get("sources") or []):
        specs.append(_entry_spec(entry, f"data.sources[{number}]"))
    return specs


def check_mixture_config(data: Mapping[str, Any], mixer: MixerConfig | Mapping[str, Any]) -> MixerConfig:
    """Everything about the sources and the mixer that can be checked without opening a dataset; the parsed mixer."""
    specs = explicit_specs(data)
    if not data.get("train") and not specs:
        raise ConfigError("no training data: pass --data DIR (or --source ORIGIN=DIR)")
    named = [s.origin for s in specs if s.origin is not None]
    duplicates = sorted({o for o in named if named.count(o) > 1})
    if duplicates:
        raise ConfigError(f"duplicate origin(s) {duplicates} among the sources; give each origin one source")
    mixer = MixerConfig.of(mixer)
    if mixer.alpha_target is not None and any(s.alpha is not None for s in specs):
        raise ConfigError("give either --alpha-target or per-source alphas, not both")
    given = [s for s in specs if s.alpha is not None]
    if given and (len(given) != len(specs) or data.get("train")):
        raise ConfigError("give an alpha for every source or for none (--data directories take none: "
                          "use --source ORIGIN=DIR:ALPHA for each)")
    if given:
        check_alphas([s.alpha for s in given], [s.origin or ",".join(s.paths) for s in given])
    return mixer


# -- reading what the datasets say -------------------------------------------------------------------------------
def _existing(path: str, who: str) -> Path:
    found = Path(path)
    if not found.exists():
        raise ConfigError(f"{who}: {path} does not exist")
    return found


def dataset_origin(path: str | Path) -> str | None:
    """The origin a dataset records: its manifest's ``origin``, else its first row's (None if neither says)."""
    from augkd.io.dataset import load_manifest, read_frames

    path = Path(path)
    if path.is_dir():
        origin = load_manifest(path).get("origin")
        if origin:
            return str(origin)
    for frame in read_frames(path):
        origin = frame.data.get("origin")
        return str(origin) if origin else None
    return None


def dataset_rows(path: str | Path) -> int:
    """Rows of a dataset directory (from its manifest) or of one shard file."""
    from augkd.io.aselmdb import count_aselmdb
    from augkd.io.dataset import load_manifest

    path = Path(path)
    if path.is_dir():
        return int(sum(shard["rows"] for shard in load_manifest(path)["shards"]))
    return int(count_aselmdb(path))


# -- resolution --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mixture:
    """The resolved sources, their shares, and the origin weight ratios (ρ per origin, reference = 1)."""

    sources: tuple[Source, ...]
    weight_ratios: dict[str, float] = field(default_factory=dict)
    reference_origin: str = "dft"
    epoch_length: int | None = None
    replacement: bool = False

    @property
    def origins(self) -> list[str]:
        return [s.origin for s in self.sources]

    @property
    def weighted(self) -> bool:
        """False when every origin has the same ratio: then every weight is exactly 1 and the losses skip them."""
        return len({self.weight_ratios.get(o, 1.0) for o in self.origins}) > 1

    def weights(self, origins: Sequence[str]) -> torch.Tensor | None:
        """Per-sample origin weights of a batch, or None when the mixture is unweighted."""
        return origin_weights(origins, self.weight_ratios) if self.weighted else None

    def sampler(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                sizes: Sequence[int] | None = None) -> MixtureSampler:
        """The training order; ``sizes`` (rows per source as read) default to the manifests' counts."""
        return MixtureSampler(
            list(sizes) if sizes is not None else [s.rows for s in self.sources], [s.alpha for s in self.sources],
            batch_size, seed, rank=rank, world_size=world_size, epoch_length=self.epoch_length,
            replacement=self.replacement,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [{"origin": s.origin, "paths": list(s.paths), "rows": s.rows, "alpha": s.alpha,
                         "weight_ratio": self.weight_ratios.get(s.origin, 1.0)} for s in self.sources],
            "reference_origin": self.reference_origin,
            "weighted": self.weighted,
            "epoch_length": self.epoch_length or sum(s.rows for s in self.sources),
            "replacement": self.replacement,
        }


def resolve_mixture(data: Mapping[str, Any], mixer: MixerConfig | Mapping[str, Any]) -> Mixture:
    """Open the sources' manifests and settle origins, sizes, shares and weight ratios; ``ConfigError`` if bad."""
    mixer = check_mixture_config(data, mixer)
    reference = mixer.reference_origin
    # --data directories, one source per origin, in the order given
    grouped: dict[str, list[str]] = {}
    for path in data.get("train") or []:
        _existing(str(path), "--data")
        origin = dataset_origin(path)
        if origin is None:
            raise ConfigError(f"--data {path} records no origin; name it with --source ORIGIN={path}")
        grouped.setdefault(origin, []).append(str(path))
    specs = [SourceSpec(tuple(paths), origin) for origin, paths in grouped.items()] + explicit_specs(data)

    sources: list[Source] = []
    for spec in specs:
        who = f"source {spec.origin}" if spec.origin else f"source {', '.join(spec.paths)}"
        for path in spec.paths:
            _existing(path, who)
        origin = spec.origin
        if origin is None:
            found = {dataset_origin(p) for p in spec.paths}
            if len(found) != 1 or None in found:
                raise ConfigError(f"{who}: its datasets record origins {sorted(map(str, found))}; "
                                  "name one with --source ORIGIN=DIR")
            origin = found.pop()
        rows = sum(dataset_rows(p) for p in spec.paths)
        if rows == 0:
            raise ConfigError(f"source {origin} ({', '.join(spec.paths)}) has no rows")
        sources.append(Source(origin, spec.paths, rows, spec.alpha if spec.alpha is not None else math.nan))
    origins = [s.origin for s in sources]
    duplicates = sorted({o for o in origins if origins.count(o) > 1})
    if duplicates:
        where = "; ".join(f"{s.origin}: {', '.join(s.paths)}" for s in sources if s.origin in duplicates)
        raise ConfigError(f"duplicate origin(s) {duplicates} among the sources ({where}); give each origin one source")

    alphas = _shares(sources, mixer.alpha_target, reference)
    sources = [Source(s.origin, s.paths, s.rows, a) for s, a in zip(sources, alphas)]
    return Mixture(
        tuple(sources), _weight_ratios(origins, mixer), reference, mixer.epoch_length, mixer.replacement,
    )


def _shares(sources: list[Source], alpha_target: float | None, reference: str) -> list[float]:
    origins = [s.origin for s in sources]
    if alpha_target is not None:
        others = [o for o in origins if o != reference]
        if len(others) > 1:
            raise ConfigError(f"--alpha-target is for two sources (origin {reference} and one other); the sources "
                              f"have origins {origins}: give each an alpha (--source ORIGIN=DIR:ALPHA)")
        if not others and alpha_target > 0:
            raise ConfigError(f"--alpha-target {alpha_target:g} asks for a share of synthetic data but the only "
                              f"source is {reference}: pass --synthetic DIR")
        if reference not in origins and alpha_target < 1:
            raise ConfigError(f"--alpha-target {alpha_target:g} leaves {1 - alpha_target:g} to origin {reference}, "
                              f"but no source has it (origins {origins})")
        return [alpha_target if o != reference else 1.0 - alpha_target for o in origins]
    if all(not math.isnan(s.alpha) for s in sources):
        alphas = [s.alpha for s in sources]
        check_alphas(alphas, origins)
        return alphas
    total = sum(s.rows for s in sources)
    return [s.rows / total for s in sources]


def _weight_ratios(origins: list[str], mixer: MixerConfig) -> dict[str, float]:
    r, given, reference = mixer.r_sdft, dict(mixer.weight_ratios), mixer.reference_origin
    unknown = sorted(set(given) - set(origins))
    if unknown:
        raise ConfigError(f"mixer.weight_ratios names origin(s) {unknown} that no source has (origins {origins})")
    uses_r = [o for o in origins if o != reference and o not in given]
    if r != 1.0 and uses_r and reference not in origins and reference not in given:
        raise ConfigError(f"--r-sdft {r:g} weighs origins against {reference!r}, but no source has that origin "
                          f"(origins {origins}); set mixer.reference_origin")
    ratios = {o: given.get(o, 1.0 if o == reference else r) for o in origins}
    return ratios

