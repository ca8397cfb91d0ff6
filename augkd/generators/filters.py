"""Which trajectories and frames are fit to train on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from augkd.errors import ConfigError

# reason name -> DetectTrajAnomaly method
ANOMALY_CHECKS = {
    "desorbed": "is_adsorbate_desorbed",
    "dissociated": "is_adsorbate_dissociated",
    "intercalated": "is_adsorbate_intercalated",
    "surface_changed": "has_surface_changed",
}
SURFACE_REFERENCES = ("relaxed_slab", "initial_slab")


@dataclass(frozen=True)
class FilterConfig:
    drop_anomalies: tuple[str, ...] = ("desorbed", "dissociated", "intercalated", "surface_changed")
    surface_reference: str = "relaxed_slab"
    max_abs_energy_per_atom: float = 30.0  # eV/atom
    max_abs_force: float = 50.0  # eV/Å

    def __post_init__(self) -> None:
        unknown = set(self.drop_anomalies) - set(ANOMALY_CHECKS)
        if unknown:
            raise ConfigError(f"unknown anomaly {sorted(unknown)} (choose from {sorted(ANOMALY_CHECKS)})")
        if self.surface_reference not in SURFACE_REFERENCES:
            raise ConfigError(f"surface_reference '{self.surface_reference}' is not one of {SURFACE_REFERENCES}")
        for name in ("max_abs_energy_per_atom", "max_abs_force"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be > 0")

    @property
    def needs_relaxed_slab(self) -> bool:
        return "surface_changed" in self.drop_anomalies and self.surface_reference == "relaxed_slab"


def trajectory_anomaly(
    initial: Atoms, final: Atoms, config: FilterConfig, relaxed_slab: Atoms | None = None
) -> str | None:
    """The first anomaly (in ``config.drop_anomalies`` order) the trajectory shows, or None."""
    if not config.drop_anomalies:
        return None
    from fairchem.data.oc.utils.flag_anomaly import DetectTrajAnomaly

    tags = initial.get_tags()
    if config.surface_reference == "initial_slab" or relaxed_slab is None:
        relaxed_slab = initial[tags != 2]
    detector = DetectTrajAnomaly(initial, final, tags, final_slab_atoms=relaxed_slab)
    for reason in config.drop_anomalies:
        if getattr(detector, ANOMALY_CHECKS[reason])():
            return reason
    return None


def label_problem(energy: float, forces: np.ndarray, config: FilterConfig) -> str | None:
    """Why a frame's labels are unusable ("nonfinite_labels", "absurd_labels"), or None if they are fine.

    A frame is dropped when EITHER bound is exceeded (the research code joined the two tests with `or` on the
    keep side and so kept nearly everything).
    """
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        return "nonfinite_labels"
    if abs(energy) / len(forces) > config.max_abs_energy_per_atom or np.abs(forces).max() > config.max_abs_force:
        return "absurd_labels"
    return None
