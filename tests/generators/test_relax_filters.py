import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from augkd.errors import ConfigError
from augkd.generators.filters import FilterConfig, label_problem, trajectory_anomaly
from augkd.generators.relax import RelaxConfig, relax


def adslab(adsorbate="O", height=1.6):
    if adsorbate == "CO":
        from ase import Atoms

        adsorbate = Atoms("CO", positions=[(0, 0, 0), (0, 0, 1.15)])
    atoms = fcc111("Cu", (3, 3, 3), vacuum=8.0)
    atoms.set_tags(np.where(atoms.get_tags() == 1, 1, 0))  # top layer surface, the rest fixed subsurface
    fixed = atoms.get_tags() == 0
    add_adsorbate(atoms, adsorbate, height, "fcc")
    atoms.set_tags(np.r_[atoms.get_tags()[: len(fixed)], [2] * (len(atoms) - len(fixed))])
    atoms.set_constraint(FixAtoms(mask=np.r_[fixed, [False] * (len(atoms) - len(fixed))]))
    return atoms


def test_relax_records_every_frame_and_respects_fixatoms():
    atoms = adslab()
    atoms.rattle(0.05, seed=3)
    fixed = atoms.constraints[0].get_indices()
    trajectory = relax(atoms, EMT(), RelaxConfig(optimizer="BFGS", fmax=0.05, steps=100))
    assert trajectory.failure is None and trajectory.converged
    assert [f.step for f in trajectory.frames] == list(range(len(trajectory.frames)))
    np.testing.assert_array_equal(trajectory.frames[0].positions, atoms.positions)
    for frame in trajectory.frames:
        np.testing.assert_array_equal(frame.positions[fixed], atoms.positions[fixed])
        reference = atoms.copy()
        reference.positions = frame.positions
        reference.calc = EMT()
        assert frame.energy == pytest.approx(reference.get_potential_energy())
        np.testing.assert_allclose(frame.forces, reference.get_forces(apply_constraint=False), atol=1e-10)
    free = np.setdiff1d(np.arange(len(atoms)), fixed)
    last = trajectory.frames[-1]
    assert np.linalg.norm(last.forces[free], axis=1).max() < 0.05
    assert trajectory.frames[-1].energy < trajectory.frames[0].energy
    assert np.abs(trajectory.frames[0].forces[fixed]).max() > 0  # unconstrained forces are recorded


def test_relax_stops_at_step_limit():
    atoms = adslab()
    atoms.rattle(0.2, seed=4)
    trajectory = relax(atoms, EMT(), RelaxConfig(optimizer="FIRE", fmax=1e-4, steps=7))
    assert len(trajectory.frames) == 8 and not trajectory.converged


def test_relax_config_is_validated():
    with pytest.raises(ConfigError, match="Nope"):
        RelaxConfig(optimizer="Nope")
    with pytest.raises(ConfigError, match="fmax=0"):
        RelaxConfig(fmax=0)


def test_label_problem_drops_either_bound():
    config = FilterConfig(max_abs_energy_per_atom=10.0, max_abs_force=20.0)
    forces = np.zeros((4, 3))
    assert label_problem(-8.0, forces, config) is None
    assert label_problem(-41.0, forces, config) == "absurd_labels"  # energy alone out of bounds
    big = forces.copy()
    big[2, 1] = -25.0
    assert label_problem(-8.0, big, config) == "absurd_labels"  # forces alone out of bounds
    assert label_problem(float("nan"), forces, config) == "nonfinite_labels"
    inf = forces.copy()
    inf[0, 0] = np.inf
    assert label_problem(-8.0, inf, config) == "nonfinite_labels"


def test_anomalies_are_detected():
    initial = adslab("CO", 1.8)
    config = FilterConfig()
    assert trajectory_anomaly(initial, initial.copy(), config) is None

    desorbed = initial.copy()
    desorbed.positions[initial.get_tags() == 2] += [0, 0, 6.0]
    assert trajectory_anomaly(initial, desorbed, config) == "desorbed"

    dissociated = initial.copy()
    ads = np.flatnonzero(initial.get_tags() == 2)
    dissociated.positions[ads[1]] += [2.5, 0, 0.5]
    assert trajectory_anomaly(initial, dissociated, FilterConfig(drop_anomalies=("dissociated",))) == "dissociated"

    reconstructed = initial.copy()
    surface = np.flatnonzero(initial.get_tags() == 1)
    reconstructed.positions[surface[0]] += [0, 0, 2.5]  # one surface atom pops out of the surface
    only_surface = FilterConfig(drop_anomalies=("surface_changed",))
    relaxed_slab = initial[initial.get_tags() != 2]
    assert trajectory_anomaly(initial, reconstructed, only_surface, relaxed_slab) == "surface_changed"
    assert trajectory_anomaly(initial, initial.copy(), only_surface, relaxed_slab) is None

    intercalated = initial.copy()
    subsurface = intercalated.positions[initial.get_tags() == 0]
    intercalated.positions[ads[0]] = subsurface[subsurface[:, 2].argmax()] + [0.9, 0.9, 0.3]
    assert trajectory_anomaly(initial, intercalated, FilterConfig(drop_anomalies=("intercalated",))) == "intercalated"


def test_filter_config_is_validated():
    with pytest.raises(ConfigError, match="unknown anomaly"):
        FilterConfig(drop_anomalies=("exploded",))
    with pytest.raises(ConfigError, match="surface_reference"):
        FilterConfig(surface_reference="nope")
