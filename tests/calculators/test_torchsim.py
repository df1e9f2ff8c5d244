"""torch-sim: batched energies, forces and stress equal MolNetCalculator one structure at a time."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from molnet.calculators import MolNetCalculator
from molnet.models import build_model

ts = pytest.importorskip("torch_sim", reason="torch-sim is an optional extra: pip install 'molnet[torchsim]'")
from molnet.calculators.torchsim import MolNetModel  # noqa: E402

ELEMENTS = ["H", "C", "N", "O", "Si"]


@pytest.fixture(scope="module", params=["mace", "mpnn"])
def model(request):
    torch.manual_seed(0)
    config = {"name": request.param, "elements": ELEMENTS, "r_max": 4.0, "num_channels": 8}
    if request.param == "mace":
        config.update(max_L=1, correlation=2, num_interactions=2, radial_MLP=[8])
    return build_model(config, dtype=torch.float64)


def _cells():
    cells = []
    for k, repeat in enumerate([(2, 1, 1), (1, 2, 1), (1, 1, 1)]):
        atoms = bulk("Si", "diamond", a=5.43) * repeat
        atoms.set_cell(
            atoms.cell[:] + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.2], [0.1, 0.4 - 0.2 * k, 0.0]]), scale_atoms=True
        )
        atoms.rattle(0.05, seed=k)
        # atoms outside the cell, each moved by its own lattice vectors (unwrapped, as MD output
        # is), plus a rigid shift: the model wraps them
        images = np.random.default_rng(k).integers(-2, 3, size=(len(atoms), 3))
        atoms.positions += images @ atoms.cell[:] + 3.0 * (k - 1)
        cells.append(atoms)
    return cells


def _molecules():
    out = []
    for k, name in enumerate(["CH4", "H2O", "CH3CH2OH", "NH3"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        out.append(atoms)
    return out


@pytest.mark.parametrize("systems", [_cells, _molecules], ids=["triclinic-cells", "molecules"])
def test_batched_state_equals_the_calculator_one_structure_at_a_time(model, systems):
    structures = systems()
    state = ts.io.atoms_to_state(structures, device=torch.device("cpu"), dtype=torch.float64)
    out = MolNetModel(model, dtype="float64")(state)
    calc = MolNetCalculator(model, dtype="float64", skin=0.0)
    start = 0
    for k, atoms in enumerate(structures):
        atoms.calc = calc
        n = len(atoms)
        assert float(out["energy"][k]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(out["forces"][start : start + n].numpy(), atoms.get_forces(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(out["stress"][k].numpy(), atoms.get_stress(voigt=False), atol=1e-10)
        else:
            assert torch.equal(out["stress"][k], torch.zeros(3, 3, dtype=torch.float64))
        start += n


def test_batched_nvt_stays_stable(model):
    structures = _cells()
    state = ts.io.atoms_to_state(structures, device=torch.device("cpu"), dtype=torch.float64)
    final = ts.integrate(
        system=state,
        model=MolNetModel(model, dtype="float64"),
        integrator=ts.nvt_langevin,
        n_steps=40,
        temperature=300,
        timestep=0.001,
        seed=0,
    )
    assert torch.isfinite(final.positions).all()
    temperature = (
        ts.calc_kT(masses=final.masses, momenta=final.momenta, system_idx=final.system_idx)
        / ts.units.MetalUnits.temperature
    )
    assert float(temperature.max()) < 2000, temperature


def test_many_molecules_in_one_state(model):
    """64 molecules at the same place, as atoms_to_state leaves them: each keeps its own neighbors
    (a linked-cell search over zero cells once took 24 GB here)."""
    from molnet.data import load_bundled

    frames = load_bundled("acac", "test")[:64]
    for atoms in frames:
        atoms.calc = None
    state = ts.io.atoms_to_state(frames, device=torch.device("cpu"), dtype=torch.float64)
    out = MolNetModel(model, dtype="float64")(state)
    calc = MolNetCalculator(model, dtype="float64", skin=0.0)
    for k in (0, 31, 63):
        frames[k].calc = calc
        assert float(out["energy"][k]) == pytest.approx(frames[k].get_potential_energy(), abs=1e-10)


def test_total_charge_reaches_a_coulomb_model():
    """torch-sim's states carry no charge: MolNetModel(total_charge=…) gives the charged energies
    that MolNetCalculator gives from atoms.info["charge"]."""
    from molnet.errors import InputError

    torch.manual_seed(0)
    config = {"name": "mpnn", "elements": ELEMENTS, "r_max": 4.0, "num_channels": 8, "long_range": {"name": "coulomb"}}
    model = build_model(config, dtype=torch.float64)
    structures = _molecules()[:2]
    state = ts.io.atoms_to_state(structures, device=torch.device("cpu"), dtype=torch.float64)
    out = MolNetModel(model, total_charge=[1.0, -1.0])(state)
    neutral = MolNetModel(model)(state)
    for k, (atoms, charge) in enumerate(zip(structures, (1.0, -1.0))):
        atoms.info["charge"] = charge
        atoms.calc = MolNetCalculator(model, skin=0.0)
        assert float(out["energy"][k]) == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(out["forces"][state.system_idx == k].numpy(), atoms.get_forces(), atol=1e-10)
        assert abs(float(out["energy"][k] - neutral["energy"][k])) > 1e-3  # the charge matters to this model
    with pytest.raises(InputError, match="total_charge has 3 values for a state of 2 systems"):
        MolNetModel(model, total_charge=[0.0, 1.0, 2.0])(state)
