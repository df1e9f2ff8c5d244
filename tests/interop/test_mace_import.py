"""mace-torch model files in molnet: exact numbers, nothing executed, unsupported features refused.

The fixtures are random-weight mace-torch 0.3.16 models with float64 references, made by
tests/fixtures/mace/make_fixtures.py in mace-torch's own venv; mace is never imported here.
"""

import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

import molnet
from molnet.calculators import MolNetCalculator
from molnet.errors import ModelFileError, UnsafeModelFileError, UnsupportedModelError
from molnet.interop import import_mace
from molnet.interop.mace import convert
from molnet.interop.mace_pickle import read_mace_model

FIXTURES = Path(__file__).parents[1] / "fixtures" / "mace"
EXACT = [
    "hco_res",
    "hco_nonres",
    "hcno_res_L2",
    "hcno_nonres",
    "hco_res_3layers",
    "hco_res_corr2",
    "hco_corr4",
    "hco_reduced_cg",
    "hco_zbl",
    "hco_agnesi",
    "hco_res_1layer",
    "hco_density",
    "hcno_density_res",
    "hco_plain_mace",
    "hco_gate_tanh",
]


def _structures(name, head=None):
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    refs = meta["structures"] if head is None else meta["structures_by_head"][head]
    for key, ref in refs.items():
        yield key, Atoms(numbers=ref["numbers"], positions=ref["positions"], cell=ref["cell"], pbc=ref["pbc"]), ref


def _worst(model, name, head=None):
    calc = MolNetCalculator(model, dtype="float64", skin=0.0)
    worst = {"energy": 0.0, "forces": 0.0, "stress": 0.0}
    for _, atoms, ref in _structures(name, head):
        atoms.calc = calc
        worst["energy"] = max(worst["energy"], abs(atoms.get_potential_energy() - ref["energy"]))
        worst["forces"] = max(worst["forces"], float(np.abs(atoms.get_forces() - np.array(ref["forces"])).max()))
        if "stress" in ref:
            worst["stress"] = max(
                worst["stress"], float(np.abs(atoms.get_stress(voigt=False) - np.array(ref["stress"])).max())
            )
    return worst


@pytest.mark.parametrize("name", EXACT)
def test_imported_models_reproduce_mace_torch(name, tmp_path):
    """Residual and non-residual first layers, plain and density-normalised blocks, max_L 0-2,
    1-3 layers, correlation 2-4, 3-4 elements, ZBL, Agnesi, mace-torch's plain MACE (no scale and
    shift) and a tanh readout gate; a molecule, a triclinic cell (stress) and a slab; through
    molnet's own file format."""
    path = molnet.save_model(import_mace(FIXTURES / f"{name}.model"), tmp_path / "m.safetensors")
    worst = _worst(molnet.load_model(path, dtype=torch.float64), name)
    assert worst["energy"] < 1e-8 and worst["forces"] < 1e-7 and worst["stress"] < 1e-8, worst
    assert not any(m == "mace" or m.startswith("mace.") for m in sys.modules)


def test_coupled_basis_float32_file_and_provenance(tmp_path):
    worst = _worst(import_mace(FIXTURES / "hcno_res_L2.model", basis="coupled"), "hcno_res_L2")
    assert worst["energy"] < 1e-8 and worst["forces"] < 1e-7, worst
    # a float32 file (max_ell 3): its coupling tensors are stored rounded to float32
    worst = _worst(import_mace(FIXTURES / "hco_res_f32.model"), "hco_res_f32")
    assert worst["energy"] < 1e-7 and worst["forces"] < 1e-6, worst
    path = molnet.save_model(import_mace(FIXTURES / "hco_res.model"), tmp_path / "m.safetensors")
    provenance = molnet.load_model(path).provenance
    assert provenance["imported_from"] == "hco_res.model" and len(provenance["source_sha256"]) == 64
    assert "mace.modules.models.ScaleShiftMACE" in provenance["mace_classes"] and provenance["head"] == "Default"


def test_each_head_of_a_two_head_file_reproduces_mace_torch(tmp_path):
    """Every head's readout, E0s, scale and shift; an unnamed head is refused when none is 'default'."""
    for head in ("pbe", "r2scan"):
        path = molnet.save_model(import_mace(FIXTURES / "hco_two_heads.model", head=head), tmp_path / f"{head}.st")
        model = molnet.load_model(path, dtype=torch.float64)
        assert model.provenance["head"] == head and model.provenance["heads_in_file"] == ["pbe", "r2scan"]
        worst = _worst(model, "hco_two_heads", head)
        assert worst["energy"] < 1e-8 and worst["forces"] < 1e-7 and worst["stress"] < 1e-8, (head, worst)
    with pytest.raises(UnsupportedModelError, match=r"heads \['pbe', 'r2scan'\]; choose one with --head"):
        import_mace(FIXTURES / "hco_two_heads.model")


def _torch_zip(payload: bytes, name="evil") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"{name}/data.pkl", payload)
        zf.writestr(f"{name}/byteorder", "little")
    return buffer.getvalue()


def test_a_malicious_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').write('x')",))

    class Command:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    class Attribute:  # getattr is allowed for torch's activation functions only
        def __reduce__(self):
            return (getattr, (torch._C._VariableFunctionsClass, "empty"))

    for payload in (Exploit(), Command(), Attribute()):
        evil = tmp_path / "evil.model"
        evil.write_bytes(_torch_zip(pickle.dumps(payload, protocol=2)))
        with pytest.raises(
            UnsafeModelFileError,
            match=r"(names (__builtin__.eval|builtins.eval|posix.system)|calls getattr on _TorchCFunctions for "
            r"'empty').*nothing from the file was run",
        ):
            import_mace(evil)
        assert not marker.exists()


def test_unsupported_features_and_broken_files_fail_clearly(tmp_path):
    mace_file = read_mace_model(FIXTURES / "hco_res.model")
    mace_file.hyper["layers"][1]["interaction_cls"] = "RealAgnosticAttResidualInteractionBlock"
    with pytest.raises(UnsupportedModelError, match="interaction block RealAgnosticAttResidualInteractionBlock"):
        convert(mace_file)
    mace_file.hyper["layers"][1]["interaction_cls"] = "RealAgnosticDensityResidualInteractionBlock"
    with pytest.raises(UnsupportedModelError, match="density-normalised and plain interaction blocks mixed"):
        convert(mace_file)
    with pytest.raises(UnsupportedModelError, match=r"readout gate \['None'\] \(molnet's readout gates with"):
        import_mace(FIXTURES / "hco_gate_none.model")
    with pytest.raises(UnsupportedModelError, match=r"radial basis GaussianBasis \(mace-torch's radial_type\)"):
        import_mace(FIXTURES / "hco_gaussian.model")
    # a TorchScript archive names its classes under __torch__ (a pickle that names one, here)
    scripted = tmp_path / "scripted.model"
    scripted.write_bytes(_torch_zip(b"\x80\x02c__torch__.mace.modules.models\nScaleShiftMACE\n)\x81."))
    with pytest.raises(UnsupportedModelError, match=r"is a TorchScript-compiled model .* convert the \.model file"):
        import_mace(scripted)
    with pytest.raises(UnsupportedModelError, match="has no head 'pbe'"):
        import_mace(FIXTURES / "hco_res.model", head="pbe")
    data = (FIXTURES / "hco_res.model").read_bytes()
    truncated = tmp_path / "truncated.model"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated.model: not a readable mace-torch model file"):
        import_mace(truncated)
    text = tmp_path / "notes.model"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="notes.model"):
        import_mace(text)


def test_cli_converts_and_the_result_fine_tunes(tmp_path):
    import lightning.pytorch as pl

    from molnet.cli import main
    from molnet.train.datamodule import AtomicDataModule
    from molnet.train.module import PotentialModule
    from tests.training_helpers import quiet_trainer

    out = tmp_path / "imported.safetensors"
    source = tmp_path / "hco_res.model"
    source.write_bytes((FIXTURES / "hco_res.model").read_bytes())
    assert main(["import-mace", str(source), "-o", str(source)]) == 2  # would overwrite its source
    assert source.read_bytes() == (FIXTURES / "hco_res.model").read_bytes()
    assert main(["import-mace", str(FIXTURES / "hco_res.model"), "-o", str(out)]) == 0
    pl.seed_everything(0)
    data = AtomicDataModule(train_index=":40", valid_fraction=0.2, batch_size=5, test_file=None)
    # the fixture's random E0s have nothing to do with AcAc's: fine-tune on forces
    module = PotentialModule(init_from=str(out), dtype="float64", lr=0.03, scheduler="cosine", energy_weight=0.0)
    trainer = quiet_trainer(max_epochs=4)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val_forces_mae_meV_per_A"]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]["val_forces_mae_meV_per_A"]
    assert after < 0.7 * before, (before, after)
