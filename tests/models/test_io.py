import json
import pickle
import struct

import pytest
import torch
from safetensors import safe_open
from torch_geometric.loader import DataLoader

import molnet
from molnet.data import AtomicGraph, load_bundled
from molnet.errors import ModelFileError
from molnet.models import build_model, read_metadata, save_model
from molnet.models.io import load_model_file


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model(
        {
            "name": "mpnn",
            "elements": ["H", "C", "O"],
            "r_max": 4.0,
            "num_channels": 16,
            "e0s": {"H": -1.0, "C": -2.0, "O": -3.0},
        },
        dtype=torch.float64,
    )
    return m


def _batch():
    return next(
        iter(
            DataLoader(
                [AtomicGraph.from_atoms(a, 4.0, dtype=torch.float64) for a in load_bundled("acac", "test")[:3]],
                batch_size=3,
            )
        )
    )


def test_round_trip_is_identical(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors", training={"data": "acac"})
    loaded = molnet.load_model(path)
    batch = _batch()
    ref, new = model(batch), loaded(batch)
    assert torch.equal(ref["energy"], new["energy"]) and torch.equal(ref["forces"], new["forces"])
    meta = read_metadata(path)
    assert meta["config"]["name"] == "mpnn" and meta["training"] == {"data": "acac"}
    assert meta["config"]["e0s"] == {"H": -1.0, "C": -2.0, "O": -3.0}


def test_pickle_is_refused_without_unpickling(model, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil(), protocol=4))
    zipped = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, zipped)
    for path in (raw, zipped):
        with pytest.raises(ModelFileError, match="pickled"):
            molnet.load_model(path)
    assert not marker.exists()


def test_truncated_file(model, tmp_path):
    path = save_model(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="m.safetensors: .*(corrupt or truncated)"):
        load_model_file(path)


def test_corrupt_header(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(struct.pack("<Q", 20) + b"{not json at all....")
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_model_file(path)


def test_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="not a molnet model"):
        load_model_file(path)


def test_newer_format(model, tmp_path):
    from safetensors.torch import save_file

    path = save_model(model, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    meta["format_version"] = "99"
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match="newer"):
        load_model_file(path)


def test_file_from_before_an_option_loads_with_the_old_behaviour(tmp_path):
    """A mace file written before first_layer_residual existed has the non-residual first layer."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    old = build_model(
        {
            "name": "mace",
            "elements": ["H", "C", "O"],
            "r_max": 4.0,
            "num_channels": 8,
            "max_ell": 1,
            "radial_MLP": [8],
            "first_layer_residual": False,
        },
        dtype=torch.float64,
    )
    path = save_model(old, tmp_path / "old.safetensors")
    meta = read_metadata(path)
    del meta["config"]["first_layer_residual"]  # as written before the option existed
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path), metadata=meta)
    loaded = load_model_file(path)
    assert loaded.config["first_layer_residual"] is False
    batch = _batch()
    assert torch.equal(loaded(batch)["energy"], old(batch)["energy"])


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="neither a pretrained model name"):
        molnet.load_model(tmp_path / "nope.safetensors")


def test_predict_batches_match_single_calls(model):
    from ase.build import bulk

    structures = load_bundled("acac", "test")[:5]
    one_by_one = [molnet.predict(model, [a])[0] for a in structures]
    batched = molnet.predict(model, structures, batch_size=2)
    for a, b in zip(one_by_one, batched):
        assert abs(a["energy"] - b["energy"]) < 1e-10 and abs(a["forces"] - b["forces"]).max() < 1e-10
    crystal = bulk("C", "diamond", a=3.6)
    (out,) = molnet.predict(model, [crystal])
    assert out["stress"].shape == (3, 3)
    with pytest.raises(TypeError, match=r"predict takes a list of structures; for one structure pass \[atoms\]"):
        molnet.predict(model, crystal)


def test_a_float32_file_loaded_in_float64_keeps_its_constants_exact(tmp_path):
    """Buffers the configuration rebuilds (e3nn's Wigner-3j blocks, the Bessel frequencies) come
    from the float64 build, not rounded from the file; the file's element energies still load."""
    config = {"name": "mace", "elements": ["H", "C", "O"], "r_max": 4.0, "num_channels": 8, "max_ell": 2}
    config |= {"correlation": 2, "e0s": {"H": -13.6, "C": -1029.9, "O": -2041.7}}
    torch.manual_seed(0)
    path = save_model(build_model(config, dtype=torch.float32), tmp_path / "m32.safetensors")
    loaded = load_model_file(path, dtype=torch.float64).state_dict()
    fresh = build_model(config, dtype=torch.float64).state_dict()
    w3j = [k for k in loaded if "_w3j_" in k] + ["body.radial.basis.frequencies"]
    assert len(w3j) > 1
    for key in w3j:
        assert torch.equal(loaded[key], fresh[key]), key
    assert loaded["e0s"].tolist() == pytest.approx([-13.6, -1029.9, -2041.7], abs=1e-4)  # float32 values
    with safe_open(str(path), framework="pt") as fh:
        for name, _ in build_model(config, dtype=torch.float64).named_parameters():  # weights: the file's
            assert torch.equal(loaded[name], fh.get_tensor(name).double()), name


def test_predict_evaluates_in_eval_mode_and_restores_the_mode():
    """A PONITA model in train mode rotates its orientation grid at random on every call."""
    from ase.build import molecule

    torch.manual_seed(0)
    model = build_model({"name": "ponita", "elements": ["H", "C", "O"], "r_max": 4.0}, dtype=torch.float64)
    assert model.training
    ethanol = molecule("CH3CH2OH")
    energies = [molnet.predict(model, [ethanol])[0]["energy"] for _ in range(3)]
    assert model.training
    assert energies[0] == energies[1] == energies[2] == molnet.predict(model.eval(), [ethanol])[0]["energy"]
