"""Coulomb block: Madelung constants, the smeared pair sum, the charge constraint, and the battery."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from molnet.errors import ConfigError, InputError
from molnet.models import build_model
from molnet.nn.coulomb import COULOMB_CONSTANT, cell_energy, molecule_energy
from tests.battery import R_MAX, LongRangeBattery, acac, evaluate

COULOMB = {"name": "coulomb", "sigma": 0.8}
MPNN = {"name": "mpnn", "num_channels": 8, "num_interactions": 2, "radial_MLP": [16], "long_range": COULOMB}
MACE = {
    "name": "mace",
    "num_channels": 8,
    "max_ell": 2,
    "radial_MLP": [16],
    "num_interactions": 2,
    "max_L": 1,
    "correlation": 2,
    "long_range": [{"name": "ewald", "k_cutoff": 3.0, "num_k_basis": 6, "projection_dim": 4}, COULOMB],
}
POINT = 1e-4  # σ (Å) so small that the Gaussians are point charges at any lattice distance


class CoulombBattery(LongRangeBattery):
    def test_far_apart_fragments_add_up(self, model):
        """Each neutral fragment keeps its own charges (the excess is spread per structure, and two equal
        fragments carry equal excess), so far apart they interact only as dipoles, ~ p²/r³."""
        a = acac()
        b = acac()
        b.positions += np.array([0.0, 0.0, 1e5])
        out = evaluate(model, [a, a + b])
        torch.testing.assert_close(out["energy"][1], 2 * out["energy"][0], atol=2 * self.atol, rtol=1e-12)


class TestMPNNCoulomb(CoulombBattery):
    configs = [{**MPNN, "id": "mpnn-coulomb"}]


class TestMACEEwaldCoulomb(CoulombBattery):
    configs = [{**MACE, "id": "mace-ewald-coulomb"}]


def _madelung(atoms: Atoms, charges: list[float], nearest: float, alpha: float | None = None) -> float:
    pos = torch.tensor(atoms.positions)
    energy = cell_energy(
        pos, torch.tensor(atoms.cell[:]), torch.tensor(charges, dtype=torch.float64), POINT, 1e-12, alpha
    ).sum()
    return -float(energy) * nearest / (COULOMB_CONSTANT * len(atoms) / 2)


@pytest.mark.parametrize("alpha", [None, 0.35, 0.6])
def test_madelung_constants_independent_of_alpha_and_cell_basis(alpha):
    a = 5.64
    conventional = bulk("NaCl", "rocksalt", a=a, cubic=True)
    primitive = bulk("NaCl", "rocksalt", a=a)
    for atoms in (conventional, primitive, conventional * (2, 1, 1)):
        charges = [1.0 if s == "Na" else -1.0 for s in atoms.get_chemical_symbols()]
        assert _madelung(atoms, charges, a / 2, alpha) == pytest.approx(
            1.74756459463, abs=1e-9
        )  # 1.747565 to the 6 digits usually quoted
    cscl = Atoms("CsCl", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 4.1, pbc=True)
    assert _madelung(cscl, [1.0, -1.0], 4.1 * math.sqrt(3) / 2, alpha) == pytest.approx(1.76267477307, abs=1e-9)


def test_charged_cell_with_background_supercell_and_stress():
    """One charge in a cubic box with its neutralising background: E = −k q² ξ/(2L), ξ = 2.837297
    (the Wigner/Madelung constant of the simple cubic lattice), for any α; 8× for a 2×2×2 supercell."""
    L = 6.0
    single = [
        float(
            cell_energy(
                torch.zeros(1, 3, dtype=torch.float64),
                torch.eye(3, dtype=torch.float64) * L,
                torch.ones(1, dtype=torch.float64),
                POINT,
                1e-12,
                alpha,
            ).sum()
        )
        for alpha in (None, 0.4, 0.7)
    ]
    for e in single:
        assert e == pytest.approx(-COULOMB_CONSTANT * 2.837297 / (2 * L), rel=1e-6)
    rng = np.random.default_rng(0)
    cell = np.array([[5.0, 0.2, 0.0], [0.4, 5.5, 0.1], [-0.3, 0.2, 6.0]])
    atoms = Atoms("H4", scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)
    q = torch.tensor([0.7, -0.2, -0.4, 0.3], dtype=torch.float64)
    one = cell_energy(torch.tensor(atoms.positions), torch.tensor(atoms.cell[:]), q, 0.8, 1e-10).sum()
    big = atoms * (2, 2, 2)
    eight = cell_energy(torch.tensor(big.positions), torch.tensor(big.cell[:]), q.repeat(8), 0.8, 1e-10).sum()
    assert float(eight) == pytest.approx(8 * float(one), rel=1e-9)
    # stress: derivative of E with respect to a symmetric strain of positions and cell
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + 0.5 * (strain + strain.T)
    energy = cell_energy(
        torch.tensor(atoms.positions) @ deform, torch.tensor(atoms.cell[:]) @ deform, q, 0.8, 1e-10
    ).sum()
    (grad,) = torch.autograd.grad(energy, strain)
    eps, numeric = 1e-5, np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                e = np.zeros((3, 3))
                e[i, j] += sign * eps / 2
                e[j, i] += sign * eps / 2
                d = torch.tensor(np.eye(3) + e)
                values.append(
                    float(
                        cell_energy(
                            torch.tensor(atoms.positions) @ d, torch.tensor(atoms.cell[:]) @ d, q, 0.8, 1e-10
                        ).sum()
                    )
                )
            numeric[i, j] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(grad.numpy(), numeric, atol=1e-7)


def test_smeared_pair_sum_by_hand_and_forces():
    rng = np.random.default_rng(3)
    pos = torch.tensor(rng.normal(0, 2.0, (5, 3)), requires_grad=True)
    q = torch.tensor([0.5, -0.3, 0.2, -0.6, 0.2], dtype=torch.float64)
    sigma = 0.7
    energy = molecule_energy(pos, q, torch.zeros(5, dtype=torch.long), sigma).sum()
    by_hand = sum(
        COULOMB_CONSTANT
        * q[i]
        * q[j]
        * math.erf(float(torch.dist(pos[i], pos[j])) / (2 * sigma))
        / float(torch.dist(pos[i], pos[j]))
        for i in range(5)
        for j in range(i + 1, 5)
    )
    assert float(energy) == pytest.approx(float(by_hand), rel=1e-12)
    (grad,) = torch.autograd.grad(energy, pos)
    numeric = np.zeros((5, 3))
    for i in range(5):
        for k in range(3):
            values = []
            for sign in (1, -1):
                p = pos.detach().clone()
                p[i, k] += sign * 1e-6
                values.append(float(molecule_energy(p, q, torch.zeros(5, dtype=torch.long), sigma).sum()))
            numeric[i, k] = (values[0] - values[1]) / 2e-6
    np.testing.assert_allclose(grad.numpy(), numeric, atol=1e-7)


def test_total_charge_constraint_per_structure_in_a_batch():
    torch.manual_seed(0)
    model = build_model({"elements": ["H", "C", "O"], "r_max": R_MAX, **MPNN}, dtype=torch.float64)
    structures = []
    for k, charge in enumerate([0.0, 1.0, -2.0]):
        atoms = acac()
        atoms.positions += 50.0 * k
        atoms.info["charge"] = charge
        structures.append(atoms)
    out = evaluate(model, structures)
    totals = torch.zeros(3, dtype=torch.float64).index_add(
        0, torch.repeat_interleave(torch.arange(3), 15), out["charges"]
    )
    torch.testing.assert_close(totals, torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64), atol=1e-12, rtol=0)
    assert out["dipole"].shape == (3, 3)
    positions = torch.cat([torch.tensor(a.positions) for a in structures])
    torch.testing.assert_close(out["dipole"][1], (out["charges"][15:30, None] * positions[15:30]).sum(0))


def test_bad_coulomb_settings_and_mixed_pbc_are_refused():
    with pytest.raises(ConfigError, match="unknown long_range block 'coulom'"):
        build_model({"elements": ["H"], "name": "mpnn", "long_range": {"name": "coulom"}})
    with pytest.raises(ConfigError, match="invalid long_range coulomb options"):
        build_model({"elements": ["H"], "name": "mpnn", "long_range": {"name": "coulomb", "sigma": -1.0}})
    # options are checked when the configuration is read, before any data or model exists
    from molnet.models.registry import family_config

    with pytest.raises(
        ConfigError, match=r"long_range ewald: unknown option\(s\) \['k_cutof'\]; valid options: \['k_cutoff'"
    ):
        family_config({"name": "mace", "long_range": [{"name": "coulomb"}, {"name": "ewald", "k_cutof": 3.0}]})
    model = build_model({"elements": ["H", "C", "O"], "r_max": R_MAX, **MPNN}, dtype=torch.float64)
    slab = acac()
    slab.set_cell([20.0, 20.0, 0.0])
    slab.pbc = [True, True, False]
    with pytest.raises(InputError, match="mixed pbc"):
        evaluate(model, [slab])


def test_calculator_recomputes_when_the_total_charge_changes():
    """ASE does not compare ``atoms.info``; the calculator must not return the neutral result for an anion."""
    from molnet.calculators import MolNetCalculator

    torch.manual_seed(0)
    model = build_model({"elements": ["H", "C", "O"], "r_max": R_MAX, **MPNN}, dtype=torch.float64)
    atoms = acac()
    atoms.calc = MolNetCalculator(model=model)
    neutral = atoms.get_potential_energy()
    atoms.info["charge"] = -1.0
    anion = atoms.get_potential_energy()
    fresh = atoms.copy()
    fresh.calc = MolNetCalculator(model=model)
    assert anion == pytest.approx(fresh.get_potential_energy(), rel=1e-12) and anion != pytest.approx(neutral)
    assert atoms.get_charges().sum() == pytest.approx(-1.0)
