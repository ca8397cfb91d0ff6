"""Gradients reach every part of a model: a few optimiser steps on EMT labels reduce the OCP-style loss."""

import numpy as np
import torch
from ase.calculators.emt import EMT
from conftest import cu_adslab

from augkd.models import build_model
from augkd.models.data import atoms_to_batch


def test_a_few_steps_of_a_tiny_painn_reduce_the_loss():
    frames = [cu_adslab(np.random.default_rng(seed)) for seed in range(3)]
    energies, forces = [], []
    for atoms in frames:
        atoms.calc = EMT()
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces(apply_constraint=False))
    batch = atoms_to_batch(frames)
    target_energy = torch.tensor(energies, dtype=torch.float32)
    target_forces = torch.tensor(np.concatenate(forces), dtype=torch.float32)

    torch.manual_seed(0)
    model = build_model("painn-tiny")
    natoms = batch.natoms.float()
    model.fit_energy_normalizer(float((target_energy / natoms).mean()), 1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_now():
        out = model(batch)
        energy_loss = (out.energy - target_energy).abs().mean()
        force_loss = (out.forces - target_forces).norm(dim=-1).mean()
        return energy_loss + 10 * force_loss

    model.train()
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_now()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert np.mean(losses[-3:]) < 0.85 * losses[0], losses  # gradients flow; not a convergence test
