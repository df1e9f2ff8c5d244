"""One battery of physics tests that every model family must pass.

A family's test module subclasses :class:`ModelBattery` and sets ``configs`` (one or more model
configurations); pytest then runs every check below for each configuration, in float64, and
the float32 check with tolerances that fit single precision.
Set ``reflection = False`` for a family that claims only SE(3).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation
from torch_geometric.loader import DataLoader

from molnet.data import AtomicGraph, load_bundled
from molnet.models import build_model

R_MAX = 4.0


def acac() -> Atoms:
    atoms = load_bundled("acac", "test")[0]
    return Atoms(atoms.numbers, atoms.positions)


def periodic_cell(seed: int = 0) -> Atoms:
    """A small triclinic H/C/O cell, shorter than the cutoff along one axis (several images)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[3.2, 0.0, 0.0], [0.7, 4.1, 0.0], [-0.4, 0.5, 4.6]])
    numbers = [1, 6, 8, 1, 6, 1]
    while True:
        frac = rng.random((len(numbers), 3))
        atoms = Atoms(numbers, scaled_positions=frac, cell=cell, pbc=True)
        d = atoms.get_all_distances(mic=True) + 10 * np.eye(len(numbers))
        if d.min() > 1.0:
            return atoms


def evaluate(model, structures: list[Atoms], stress: bool = False, batch_size: int | None = None) -> dict:
    graphs = [AtomicGraph.from_atoms(a, model.r_max, dtype=model.dtype) for a in structures]
    loader = DataLoader(graphs, batch_size=batch_size or len(graphs))
    outs = [model(b, compute_forces=True, compute_stress=stress) for b in loader]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def random_rotation(seed: int = 1, reflect: bool = False) -> np.ndarray:
    rot = Rotation.random(random_state=seed).as_matrix()
    return -rot if reflect else rot


class ModelBattery:
    """Invariance, equivariance, derivatives, extensivity, batching and smoothness checks."""

    configs: list[dict] = []
    reflection: bool = True
    rotation_exact: bool = True  # False: rotations hold up to a discretisation, tested by the family
    atol: float = 1e-9

    @pytest.fixture
    def model(self, model_config):
        torch.manual_seed(0)
        cfg = {"elements": ["H", "C", "O"], "r_max": R_MAX, **model_config}
        model = build_model(cfg, dtype=torch.float64).eval()
        with torch.no_grad():  # non-trivial E0/scale so that their handling is tested too
            model.e0s.copy_(torch.tensor([-1.3, -3.1, -2.2], dtype=torch.float64))
            model.scale.fill_(1.7)
            model.shift.fill_(0.05)
        return model

    # --- invariance and equivariance -------------------------------------------------------
    @pytest.mark.parametrize("structure", ["molecule", "periodic"])
    @pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
    def test_rotation_equivariance(self, model, structure, reflect):
        if reflect and not self.reflection:
            pytest.skip("family claims SE(3) only")
        atoms = acac() if structure == "molecule" else periodic_cell()
        rot = random_rotation(reflect=reflect)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T
        if atoms.pbc.any():
            moved.cell = atoms.cell[:] @ rot.T
        ref, new = evaluate(model, [atoms], stress=atoms.pbc.any()), evaluate(model, [moved], stress=atoms.pbc.any())
        assert abs(float(ref["energy"][0])) > 1e-3
        torch.testing.assert_close(new["energy"], ref["energy"], atol=self.atol, rtol=0)
        rot_t = torch.tensor(rot)
        torch.testing.assert_close(new["forces"], ref["forces"] @ rot_t.T, atol=self.atol, rtol=0)
        if atoms.pbc.any():
            torch.testing.assert_close(new["stress"][0], rot_t @ ref["stress"][0] @ rot_t.T, atol=self.atol, rtol=0)

    @pytest.mark.parametrize("structure", ["molecule", "periodic"])
    def test_translation_invariance(self, model, structure):
        atoms = acac() if structure == "molecule" else periodic_cell()
        moved = atoms.copy()
        moved.positions += np.array([3.3, -1.7, 12.9])
        ref, new = evaluate(model, [atoms]), evaluate(model, [moved])
        torch.testing.assert_close(new["energy"], ref["energy"], atol=self.atol, rtol=0)
        torch.testing.assert_close(new["forces"], ref["forces"], atol=self.atol, rtol=0)

    @pytest.mark.parametrize("structure", ["molecule", "periodic"])
    def test_permutation_invariance(self, model, structure):
        atoms = acac() if structure == "molecule" else periodic_cell()
        perm = np.random.default_rng(3).permutation(len(atoms))
        ref, new = evaluate(model, [atoms]), evaluate(model, [atoms[perm]])
        torch.testing.assert_close(new["energy"], ref["energy"], atol=self.atol, rtol=0)
        torch.testing.assert_close(new["forces"], ref["forces"][perm], atol=self.atol, rtol=0)
        torch.testing.assert_close(new["node_energy"], ref["node_energy"][perm], atol=self.atol, rtol=0)

    # --- derivatives --------------------------------------------------------------------------
    @pytest.mark.parametrize("structure", ["molecule", "periodic"])
    def test_forces_are_minus_energy_gradient(self, model, structure):
        atoms = acac() if structure == "molecule" else periodic_cell()
        forces = evaluate(model, [atoms])["forces"].numpy()
        h = 1e-4
        rng = np.random.default_rng(0)
        for atom in rng.choice(len(atoms), size=3, replace=False):
            for axis in range(3):
                plus, minus = atoms.copy(), atoms.copy()
                plus.positions[atom, axis] += h
                minus.positions[atom, axis] -= h
                e = evaluate(model, [plus, minus])["energy"].numpy()
                numeric = -(e[0] - e[1]) / (2 * h)
                assert abs(numeric - forces[atom, axis]) < 1e-6 * max(1.0, abs(numeric)), (atom, axis)

    def test_stress_is_finite_strain_derivative(self, model):
        atoms = periodic_cell()
        stress = evaluate(model, [atoms], stress=True)["stress"][0].numpy()
        assert np.abs(stress).max() > 1e-4
        h = 1e-5
        volume = atoms.get_volume()
        for i in range(3):
            for j in range(3):
                energies = []
                for sign in (1, -1):
                    eps = np.zeros((3, 3))
                    eps[i, j] += sign * h / 2
                    eps[j, i] += sign * h / 2
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
                    energies.append(float(evaluate(model, [strained])["energy"][0]))
                numeric = (energies[0] - energies[1]) / (2 * h) / volume
                assert abs(numeric - stress[i, j]) < 1e-6 * max(1.0, abs(numeric)), (i, j)

    # --- extensivity and batching ---------------------------------------------------------------
    def test_supercell_is_extensive(self, model):
        atoms = periodic_cell()
        supercell = atoms.repeat((2, 2, 1))
        ref, big = evaluate(model, [atoms], stress=True), evaluate(model, [supercell], stress=True)
        torch.testing.assert_close(big["energy"], 4 * ref["energy"], atol=4 * self.atol, rtol=1e-12)
        torch.testing.assert_close(big["forces"], ref["forces"].repeat(4, 1), atol=self.atol, rtol=0)
        torch.testing.assert_close(big["stress"], ref["stress"], atol=self.atol, rtol=0)

    def test_batch_equals_one_at_a_time(self, model):
        structures = [acac(), periodic_cell(0), periodic_cell(1)]
        batched = evaluate(model, structures, stress=True)
        single = evaluate(model, structures, stress=True, batch_size=1)
        for key in ("energy", "forces", "stress", "node_energy"):
            torch.testing.assert_close(batched[key], single[key], atol=self.atol, rtol=0)

    def test_far_apart_fragments_add_up(self, model):
        a = acac()
        b = acac()
        b.positions += np.array([0.0, 0.0, 3 * R_MAX * 3 + 20.0])
        combined = a + b
        e = evaluate(model, [a, combined])["energy"]
        torch.testing.assert_close(e[1], 2 * e[0], atol=2 * self.atol, rtol=1e-12)

    # --- single precision ---------------------------------------------------------------------------
    def test_float32_symmetries_derivatives_and_batching(self, model):
        """The same weights in float32: equal to float64 to single precision, rotation/translation/
        permutation invariant, forces = −∇E by finite differences and batches equal singles, all at
        float32 tolerances."""
        import copy

        single = copy.deepcopy(model).to(torch.float32)
        atoms, cell = acac(), periodic_cell()
        ref = evaluate(model, [atoms, cell])
        out = evaluate(single, [atoms, cell])
        torch.testing.assert_close(out["energy"].double(), ref["energy"], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(out["forces"].double(), ref["forces"], atol=1e-4, rtol=1e-4)
        rot = random_rotation(reflect=self.reflection) if self.rotation_exact else np.eye(3)
        moved = atoms.copy()
        moved.positions = atoms.positions @ rot.T + np.array([1.3, -0.4, 2.2])
        perm = np.random.default_rng(3).permutation(len(atoms))
        again = evaluate(single, [moved[perm]])
        torch.testing.assert_close(again["energy"], out["energy"][:1], atol=2e-4, rtol=1e-6)
        rot_t = torch.tensor(rot, dtype=torch.float32)
        # rounding grows with the largest force (1e5 eV/Å with ZBL and random weights), not each component
        force_atol = max(2e-4, 2e-5 * float(out["forces"].abs().max()))
        torch.testing.assert_close(
            again["forces"], (out["forces"][: len(atoms)] @ rot_t.T)[perm], atol=force_atol, rtol=1e-4
        )
        h = 1e-2  # float32: a step that keeps rounding (1e-7·|E|/h) below the O(h²) error
        for atom, axis in ((0, 0), (5, 1), (11, 2)):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            e = evaluate(single, [plus, minus])["energy"].double().numpy()
            numeric = -(e[0] - e[1]) / (2 * h)
            assert abs(numeric - float(out["forces"][atom, axis])) < 2e-3 * max(1.0, abs(numeric)), (atom, axis)
        one_by_one = evaluate(single, [atoms, cell], batch_size=1)
        torch.testing.assert_close(one_by_one["energy"], out["energy"], atol=1e-4, rtol=1e-6)

    # --- smoothness --------------------------------------------------------------------------------
    def test_energy_is_smooth_at_the_cutoff(self, model):
        def dimer(r):
            return Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]])

        eps = 1e-6
        inside, outside = evaluate(model, [dimer(R_MAX - eps)]), evaluate(model, [dimer(R_MAX + eps)])
        torch.testing.assert_close(inside["energy"], outside["energy"], atol=1e-9, rtol=0)
        torch.testing.assert_close(inside["forces"], outside["forces"], atol=1e-7, rtol=0)
        # and the dimer does interact inside the cutoff
        near = evaluate(model, [dimer(0.5 * R_MAX)])
        assert abs(float(near["energy"][0] - outside["energy"][0])) > 1e-6


class LongRangeBattery(ModelBattery):
    """The battery for models with a long-range block, whose claims are weaker in two places."""

    def test_far_apart_fragments_add_up(self, model):
        """Weaker claim than the battery's: Ewald couples fragments at any distance by design.

        The real-space kernel reaches about (num_k_basis + 2)·π/k_cutoff (8 Å here) and then
        decays as r⁻⁶, so fragments are additive to the battery tolerance only far beyond that
        (1000 Å), and visibly coupled at 15 Å, where no edge joins them.
        """
        a = acac()
        energies = []
        for gap in (15.0, 1000.0):
            b = acac()
            b.positions += np.array([0.0, 0.0, gap + np.ptp(a.positions[:, 2])])
            energies.append(evaluate(model, [a, a + b])["energy"])
        near, far = energies
        torch.testing.assert_close(far[1], 2 * far[0], atol=2 * self.atol, rtol=1e-12)
        assert abs(float(near[1] - 2 * near[0])) > 1e-8

    def test_energy_is_smooth_at_the_cutoff(self, model):
        """The battery compares E(r_max ∓ ε) directly, which assumes E is flat beyond r_max; with
        Ewald it is not (dE/dr ~ 1e-3 eV/Å there), so the jump is measured after removing the
        first-order change 2ε·F: E(r_max − ε) − E(r_max + ε) = 2ε·F_x(O) + O(ε³).
        """

        def dimer(r):
            return Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]])

        eps = 1e-6
        inside, outside = evaluate(model, [dimer(R_MAX - eps)]), evaluate(model, [dimer(R_MAX + eps)])
        force = 0.5 * float(inside["forces"][1, 0] + outside["forces"][1, 0])  # −dE/dr
        jump = float(inside["energy"][0] - outside["energy"][0]) - 2 * eps * force
        assert abs(jump) < 1e-9
        torch.testing.assert_close(inside["forces"], outside["forces"], atol=1e-7, rtol=0)
        near = evaluate(model, [dimer(0.5 * R_MAX)])
        assert abs(float(near["energy"][0] - outside["energy"][0])) > 1e-6
