from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from molnet.data import compute_statistics, load_bundled, random_split, read_dataset, split_isolated_atoms
from molnet.data.bundled import bundled_path
from molnet.errors import DataError


def test_bundled_sets_read_with_targets():
    for name in ("acac", "ethanol"):
        configs = load_bundled(name, "train")
        assert len(configs) >= 100
        assert all("REF_energy" in a.info and a.arrays["REF_forces"].shape == (len(a), 3) for a in configs)
        e0s, rest = split_isolated_atoms(load_bundled(name, "isolated_atoms"))
        assert {1, 6, 8} <= set(e0s) and rest == []


def test_custom_keys_and_stress(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    atoms.info["DFT_energy"] = -1.5
    atoms.info["DFT_stress"] = [1, 2, 3, 4, 5, 6]
    atoms.arrays["DFT_forces"] = np.ones((2, 3))
    path = tmp_path / "d.extxyz"
    write(path, atoms)
    (a,) = read_dataset(path, energy_key="DFT_energy", forces_key="DFT_forces", stress_key="DFT_stress")
    assert a.info["REF_energy"] == -1.5
    np.testing.assert_allclose(a.info["REF_stress"], [[1, 6, 5], [6, 2, 4], [5, 4, 3]])


def test_ase_db_is_read(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db import connect

    atoms = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-2.0, forces=np.zeros((2, 3)))
    with connect(tmp_path / "d.db") as db:
        db.write(atoms)
    (a,) = read_dataset(tmp_path / "d.db", require=("energy", "forces"))
    assert a.info["REF_energy"] == -2.0


def test_ase_db_key_value_pairs_and_data_are_read(tmp_path):
    """A db row's key-value pairs and data (custom target keys, config_type, charge) reach molnet."""
    from ase.db import connect

    from molnet.data import split_isolated_atoms

    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    water.set_initial_charges([1.0, 0.0, 0.0])  # ASE's db keeps their sum as the row's "charge"
    forces = np.arange(9.0).reshape(3, 3)
    with connect(tmp_path / "d.db") as db:
        db.write(water, my_E=-14.2, config_type="md", data={"dft_forces": forces, "dft_dipole": [0.1, 0.2, 0.3]})
        db.write(Atoms("O"), my_E=-2.0, config_type="IsolatedAtom")
    frames = read_dataset(
        tmp_path / "d.db",
        energy_key="my_E",
        forces_key="dft_forces",
        dipole_key="dft_dipole",
        require=("energy", "forces"),
    )
    e0s, (a,) = split_isolated_atoms(frames)
    assert e0s == {8: -2.0}
    assert a.info["REF_energy"] == -14.2 and a.info["config_type"] == "md" and a.info["charge"] == 1
    np.testing.assert_array_equal(a.arrays["REF_forces"], forces)
    np.testing.assert_array_equal(a.info["REF_dipole"], [0.1, 0.2, 0.3])
    (only,) = read_dataset(tmp_path / "d.db", energy_key="my_E", index="1")
    assert len(only) == 1 and only.info["REF_energy"] == -2.0
    # rows are selected as ase.io.read selects them: frames, slices and queries
    for index, energies in (("-1", [-2.0]), (0, [-14.2]), (":1", [-14.2]), ("config_type=md", [-14.2])):
        assert [
            a.info["REF_energy"] for a in read_dataset(tmp_path / "d.db", energy_key="my_E", index=index)
        ] == energies
    with pytest.raises(DataError, match=r"d.db: frame 5 is out of range \(the database holds 2 rows\)"):
        read_dataset(tmp_path / "d.db", energy_key="my_E", index="5")


def test_missing_energy_names_file_and_frame(tmp_path):
    frames = [Atoms("H", info={"energy": -1.0}), Atoms("H")]
    path = tmp_path / "d.xyz"
    write(path, frames, format="extxyz")
    with pytest.raises(DataError, match=r"d.xyz, frame 1: no energy under the key 'energy'") as error:
        read_dataset(path)
    assert "--energy-key on the command line or data.energy_key in a training config" in str(error.value)


def test_wrong_forces_shape(tmp_path):
    path = tmp_path / "d.xyz"
    path.write_text('2\nProperties=species:S:1:pos:R:3:forces:R:2 energy=-1.0 pbc="F F F"\nH 0 0 0 1 1\nH 0 0 1 1 1\n')
    with pytest.raises(DataError, match=r"frame 0: forces .* shape \(2, 2\); expected \(2, 3\)"):
        read_dataset(path)


def test_truncated_and_missing_files(tmp_path):
    text = bundled_path("acac", "train").read_text().splitlines()[:30]
    path = tmp_path / "t.xyz"
    path.write_text("\n".join(text))
    with pytest.raises(DataError, match="t.xyz: cannot be read"):
        read_dataset(path)
    with pytest.raises(DataError, match="no such data file"):
        read_dataset(tmp_path / "missing.xyz")


def test_statistics_and_split():
    configs = load_bundled("acac", "train")[:50]
    e0s, _ = split_isolated_atoms(load_bundled("acac", "isolated_atoms"))
    stats = compute_statistics(configs, ["H", "C", "O"], 5.0, e0s)
    assert stats.e0s["H"] == pytest.approx(-13.568422178253735)
    assert 5 < stats.avg_num_neighbors < 15 and 0.3 < stats.scale < 3
    with pytest.raises(
        DataError,
        match=r"cannot be fitted: the training compositions determine only 1 combination\(s\) of 3.*data.e0s: average",
    ):
        compute_statistics(configs, ["H", "C", "O"], 5.0, None)
    fitted = compute_statistics(configs, ["H", "C", "O"], 5.0, None, e0s="average")
    composition = {"H": 8, "C": 5, "O": 2}
    mean_e = np.mean([a.info["REF_energy"] for a in configs])
    assert sum(n * fitted.e0s[s] for s, n in composition.items()) == pytest.approx(mean_e, rel=1e-9)
    train, valid = random_split(configs, 0.2, seed=1)
    assert len(valid) == 10 and len(train) == 40
    assert random_split(configs, 0.2, seed=1)[1][0] is valid[0]


def test_isolated_atoms_file_needs_no_config_type(tmp_path):
    from molnet.data.datasets import read_isolated_atoms

    root = Path(__file__).parents[2] / "data" / "3bpa" / "iso_atoms.xyz"  # single atoms without config_type
    e0s = read_isolated_atoms(root)
    assert sorted(e0s) == [1, 6, 7, 8] and e0s[1] == pytest.approx(-13.587222780835477)
    bad = tmp_path / "two.xyz"
    bad.write_text('2\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"\nH 0 0 0\nH 0 0 0.7\n')
    with pytest.raises(
        DataError, match=r"two.xyz, frame 0: an isolated-atoms file holds single atoms; this frame has 2"
    ):
        read_isolated_atoms(bad)


def test_mace_torch_key_names_keep_their_targets(tmp_path):
    """A file in mace-torch's convention names its targets REF_energy/REF_forces/REF_stress, the
    names under which molnet stores parsed values; reading it must keep (and convert) them."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    atoms.info["REF_energy"] = -1.5
    atoms.info["REF_stress"] = [1, 2, 3, 4, 5, 6]
    atoms.arrays["REF_forces"] = np.full((2, 3), 0.5)
    path = tmp_path / "mace.extxyz"
    write(path, atoms)
    (a,) = read_dataset(
        path,
        energy_key="REF_energy",
        forces_key="REF_forces",
        stress_key="REF_stress",
        require=("energy", "forces", "stress"),
        energy_unit="kcal/mol",
    )
    kcal = 0.0433641043
    np.testing.assert_allclose(a.info["REF_energy"], -1.5 * kcal, rtol=1e-6)
    np.testing.assert_allclose(a.arrays["REF_forces"], 0.5 * kcal, rtol=1e-6)
    np.testing.assert_allclose(a.info["REF_stress"][0, 1], 6 * kcal, rtol=1e-6)


def test_stale_parsed_keys_do_not_pass_as_targets(tmp_path):
    """REF_* values in a file read with other keys are not taken for parsed (converted) targets."""
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]])
    atoms.info["REF_energy"] = -1.5  # Hartree, say, but not the key asked for
    atoms.arrays["REF_forces"] = np.ones((2, 3))
    path = tmp_path / "d.extxyz"
    write(path, atoms)
    (a,) = read_dataset(path, energy_key="dft_energy", forces_key="dft_forces", require=())
    assert "REF_energy" not in a.info and "REF_forces" not in a.arrays


def test_mace_torch_isolated_atom_marker():
    h = Atoms("H", info={"config_type": "IsolatedAtom", "REF_energy": -13.6})
    o = Atoms("O", info={"config_type": "isolated_atom", "REF_energy": -432.0})
    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    e0s, rest = split_isolated_atoms([h, o, water])
    assert e0s == {1: -13.6, 8: -432.0} and rest == [water]


def test_isolated_atoms_in_a_training_file_need_no_forces(tmp_path):
    """mace-torch's and molnet's isolated-atom frames carry energies only; the other frames must still have forces."""
    iso = Atoms("O", info={"config_type": "IsolatedAtom", "energy": -432.0})
    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], info={"energy": -470.0})
    water.arrays["forces"] = np.zeros((3, 3))
    path = tmp_path / "train.extxyz"
    write(path, [iso, water])
    e0s, rest = split_isolated_atoms(read_dataset(path, require=("energy", "forces")))
    assert e0s == {8: -432.0} and len(rest) == 1
    del water.arrays["forces"]
    write(path, [iso, water])
    with pytest.raises(DataError, match="frame 1: no forces"):
        read_dataset(path, require=("energy", "forces"))
