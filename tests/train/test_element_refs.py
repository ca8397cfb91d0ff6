"""Per-element reference energies: the least-squares fit recovers known offsets, apply∘remove is the identity, absent
elements get 0 and are listed, the value and its file round-trip."""

import numpy as np
import pytest
import torch

from augkd.errors import ConfigError
from augkd.element_refs import (
    N_REFS,
    ElementReferences,
    apply_references,
    batch_reference_energies,
    composition_matrix,
    fit_element_references,
    fit_origin_references,
    load_references,
    reference_energies,
    remove_references,
    save_references,
)

# eV/atom offsets of two made-up "codes" for H, C, O, Cu, Pt
OFFSETS_A = {1: -3.4, 6: -9.2, 8: -4.9, 29: -3.7, 78: -6.1}
OFFSETS_B = {1: -13.6, 6: -1030.1, 8: -2041.5, 29: -44800.2, 78: -500000.7}


def refs_of(offsets):
    refs = np.zeros(N_REFS)
    for z, value in offsets.items():
        refs[z] = value
    return refs


def structures(rng, count, elements=(1, 6, 8, 29, 78)):
    return [rng.choice(elements, size=rng.integers(4, 40)) for _ in range(count)]


def test_fit_recovers_known_per_element_offsets_with_noise(one_thread):
    rng = np.random.default_rng(0)
    numbers = structures(rng, 300)
    physics = rng.normal(scale=0.2, size=len(numbers))  # what a model should learn: small, composition-free
    energies = reference_energies(refs_of(OFFSETS_B), numbers) + physics
    fit = fit_element_references(numbers, energies)
    assert fit.elements == (1, 6, 8, 29, 78) and fit.rank == 5 and fit.rows == 300
    for z, value in OFFSETS_B.items():
        assert fit.refs[z] == pytest.approx(value, abs=0.05)
    assert fit.refs[[z for z in range(N_REFS) if z not in OFFSETS_B]].tolist() == [0.0] * (N_REFS - 5)
    assert fit.mae < 0.25 and fit.r2 > 0.999999 and fit.zero_mean
    referenced = apply_references(energies, numbers, fit.refs)
    assert abs(referenced.mean()) < 0.05 and referenced.std() == pytest.approx(physics.std(), rel=0.1)


def test_two_sources_shifted_by_offsets_reference_to_the_same_energies():
    rng = np.random.default_rng(1)
    numbers = structures(rng, 200)
    physics = rng.normal(scale=0.3, size=len(numbers))
    source_a = reference_energies(refs_of(OFFSETS_A), numbers) + physics
    source_b = reference_energies(refs_of(OFFSETS_B), numbers) + physics
    refs = fit_origin_references({"gpaw": (numbers, source_a), "vasp": (numbers, source_b)}, predict_origin="gpaw")
    learned = apply_references(source_a, numbers, refs.refs("gpaw"))  # what a perfect student learns from either
    np.testing.assert_allclose(apply_references(source_b, numbers, refs.refs("vasp")), learned, atol=1e-6)
    # a referenced prediction comes back in the chosen origin's scale
    assert refs.predicted(learned[0], numbers[0]) == pytest.approx(source_a[0], abs=1e-6)
    assert refs.predicted(learned[0], numbers[0], origin="vasp") == pytest.approx(source_b[0], abs=1e-6)


def test_apply_then_remove_is_the_identity():
    rng = np.random.default_rng(2)
    numbers = structures(rng, 50)
    energies = rng.normal(scale=100, size=50)
    refs = refs_of(OFFSETS_B)
    np.testing.assert_allclose(remove_references(apply_references(energies, numbers, refs), numbers, refs), energies,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(apply_references(remove_references(energies, numbers, refs), numbers, refs), energies,
                               rtol=0, atol=1e-9)


def test_elements_absent_from_a_source_get_zero_and_are_listed():
    rng = np.random.default_rng(3)
    with_h = structures(rng, 60, elements=(1, 8, 29))
    without_h = structures(rng, 60, elements=(8, 29))
    refs = fit_origin_references({
        "dft": (without_h, reference_energies(refs_of(OFFSETS_A), without_h)),
        "synthetic": (with_h, reference_energies(refs_of(OFFSETS_B), with_h)),
    }, predict_origin="dft")
    assert refs.fits["dft"].absent == (1,) and refs.fits["synthetic"].absent == ()
    assert refs.refs("dft")[1] == 0.0 and refs.refs("synthetic")[1] == pytest.approx(OFFSETS_B[1], abs=1e-6)
    assert refs.refs("dft")[8] == pytest.approx(OFFSETS_A[8], abs=1e-6)


def test_collinear_compositions_are_reported_by_rank():
    numbers = [np.array([8, 1, 1] * k) for k in range(1, 6)]  # water clusters: H and O always 2:1
    fit = fit_element_references(numbers, [-14.2 * k for k in range(1, 6)])
    assert fit.elements == (1, 8) and fit.rank == 1
    assert 2 * fit.refs[1] + fit.refs[8] == pytest.approx(-14.2)


def test_batch_reference_energies_match_numpy():
    rng = np.random.default_rng(4)
    numbers = structures(rng, 5)
    refs = refs_of(OFFSETS_A)
    atomic_numbers = torch.from_numpy(np.concatenate(numbers))
    batch = torch.repeat_interleave(torch.arange(5), torch.tensor([len(n) for n in numbers]))
    out = batch_reference_energies(torch.from_numpy(refs), atomic_numbers, batch, 5)
    np.testing.assert_allclose(out.numpy(), reference_energies(refs, numbers), atol=1e-12)
    # a mixed batch: each structure with its own origin's references
    table = torch.from_numpy(np.stack([refs, refs_of(OFFSETS_B)]))
    origin = torch.tensor([0, 1, 1, 0, 1])
    mixed = batch_reference_energies(table[origin], atomic_numbers, batch, 5)
    expected = [reference_energies(table[o].numpy(), [n])[0] for o, n in zip(origin.tolist(), numbers)]
    np.testing.assert_allclose(mixed.numpy(), expected, atol=1e-9)


def test_value_file_and_checkpoint_extra_round_trip(tmp_path):
    refs = ElementReferences({"dft": refs_of(OFFSETS_A), "synthetic": refs_of(OFFSETS_B)}, predict_origin="dft")
    extra = refs.to_extra()
    assert set(extra) == {"origins", "predict_origin"} and len(extra["origins"]["dft"]) == N_REFS
    assert all(isinstance(x, float) for x in extra["origins"]["synthetic"])
    again = ElementReferences.from_extra(extra)
    loaded = load_references(save_references(tmp_path / "refs.json", refs))
    for other in (again, loaded):
        assert other.predict_origin == "dft" and sorted(other.origins) == ["dft", "synthetic"]
        np.testing.assert_array_equal(other.refs("synthetic"), refs.refs("synthetic"))
    assert refs.energy("dft", [1, 1, 8]) == pytest.approx(2 * -3.4 - 4.9)


@pytest.mark.parametrize("build, message", [
    (lambda: ElementReferences({"dft": np.zeros(118)}, "dft"), "119 values"),
    (lambda: ElementReferences({"dft": np.zeros(N_REFS)}, "vasp"), "predict origin 'vasp'"),
    (lambda: ElementReferences({"dft": np.full(N_REFS, np.nan)}, "dft"), "non-finite"),
    (lambda: ElementReferences({}, "dft"), "at least one origin"),
    (lambda: fit_element_references([[1, 1]], [1.0, 2.0]), "1 compositions but 2 energies"),
    (lambda: fit_element_references([], []), "no rows"),
    (lambda: composition_matrix([[0, 1]]), "atomic numbers must lie in 1..118"),
])
def test_bad_values_are_config_errors(build, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_foreign_files_are_refused(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text('{"Cu": -3.7}')
    with pytest.raises(ConfigError, match="not an augkd-element-refs file"):
        load_references(path)
    with pytest.raises(ConfigError, match="no such file"):
        load_references(tmp_path / "missing.json")
