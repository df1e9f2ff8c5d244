import pytest
import torch
from ase import Atoms

from molnet.data import AtomicGraph
from molnet.errors import ConfigError, NonFiniteError, UnknownElementError
from molnet.models import build_model


def _model():
    return build_model(
        {"name": "mpnn", "elements": ["H", "C", "O"], "r_max": 4.0, "num_channels": 8}, dtype=torch.float64
    )


def test_unknown_element_is_named():
    g = AtomicGraph.from_atoms(Atoms("HN", positions=[[0, 0, 0], [1, 0, 0]]), 4.0)
    with pytest.raises(UnknownElementError, match=r"\['N'\].*atom index \[1\].*\['H', 'C', 'O'\]"):
        _model()(g)


def test_e0_scale_shift_enter_energy():
    model = _model()
    g = AtomicGraph.from_atoms(Atoms("H"), 4.0, dtype=torch.float64)
    base = float(model(g, compute_forces=False)["energy"])
    with torch.no_grad():
        model.e0s[0] += 2.0
        model.shift += 0.5
    assert float(model(g, compute_forces=False)["energy"]) == pytest.approx(base + 2.5)


def test_non_finite_output_is_an_error():
    model = _model()
    with torch.no_grad():
        model.scale.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="non-finite energy"):
        model(AtomicGraph.from_atoms(Atoms("H"), 4.0))


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "nope", "elements": ["H"]}, "unknown model family 'nope'"),
        ({"name": "mpnn"}, "needs 'elements'"),
        ({"name": "mpnn", "elements": ["H", "Xx"]}, "distinct chemical symbols"),
        ({"name": "mpnn", "elements": ["H"], "num_chanels": 3}, r"unknown key\(s\) \['num_chanels'\]"),
        # wrong types: the string 'False' would be truthy and build the other architecture
        (
            {"name": "mace", "elements": ["H"], "first_layer_residual": "False"},
            "first_layer_residual must be true or false",
        ),
        ({"name": "mace", "elements": ["H"], "num_channels": "sixteen"}, "num_channels must be an integer"),
        ({"name": "mace", "elements": ["H"], "num_channels": 16.5}, "num_channels must be an integer"),
        ({"name": "mace", "elements": ["H"], "num_channels": 0}, "num_channels and readout_hidden must be >= 1"),
        ({"name": "mace", "elements": ["H"], "radial_MLP": 64}, "radial_MLP must be a list of integers"),
        ({"name": "mpnn", "elements": ["H"], "r_max": "5"}, "r_max must be a number"),
        ({"name": "ponita", "elements": ["H"], "random_rotate_grid": 1}, "random_rotate_grid must be true or false"),
        ({"name": "csmpn", "elements": ["H"], "r_tri": "x"}, "r_tri must be a number or null"),
    ],
)
def test_bad_configs(config, message):
    with pytest.raises(ConfigError, match=message):
        build_model(config)


def test_numpy_numbers_in_a_config_become_python_numbers(tmp_path):
    """A configuration computed with NumPy builds, and saves as JSON, like one written by hand."""
    import numpy as np

    from molnet.models import save_model

    config = {"name": "ponita", "elements": ["H"], "hidden_dim": np.int64(8), "num_layers": np.int64(1)}
    model = build_model({**config, "r_max": np.float32(3.5), "num_ori": np.int64(4), "basis_dim": np.int64(8)})
    assert type(model.config["hidden_dim"]) is int and type(model.config["r_max"]) is float
    save_model(model, tmp_path / "m.safetensors")


def test_float32_and_float64_agree():
    torch.manual_seed(0)
    model = _model()
    atoms = Atoms("CHO", positions=[[0, 0, 0], [1.1, 0, 0], [0, 1.2, 0.1]])
    e64 = model(AtomicGraph.from_atoms(atoms, 4.0, dtype=torch.float64))["energy"]
    e32 = model.float()(AtomicGraph.from_atoms(atoms, 4.0, dtype=torch.float32))["energy"]
    assert e32.dtype == torch.float32
    torch.testing.assert_close(e32.double(), e64, atol=1e-4, rtol=1e-5)


def test_deepcopy_keeps_parameters_and_buffers_aligned():
    """EMA pairs parameters and buffers of a copy by position: they must match one to one."""
    import copy
    import itertools

    model = build_model(
        {"name": "mace", "elements": ["H", "C", "O"], "num_channels": 8, "max_ell": 3, "max_L": 1}, dtype=torch.float64
    )
    clone = copy.deepcopy(model)
    pairs = zip(
        itertools.chain(model.named_parameters(), model.named_buffers()),
        itertools.chain(clone.named_parameters(), clone.named_buffers()),
    )
    for (n1, t1), (n2, t2) in pairs:
        assert n1 == n2 and t1.shape == t2.shape and torch.equal(t1, t2)
    assert len(list(model.buffers())) == len(list(clone.buffers()))


def test_float64_models_keep_e0s_scale_and_shift_exact(tmp_path):
    """build_model(dtype=float64) creates E0s, scale and shift in float64 (no float32 rounding), and files keep them."""
    import molnet
    from molnet.models import build_model

    config = {
        "name": "mpnn",
        "elements": ["H", "C"],
        "r_max": 4.0,
        "e0s": {"H": -13.6, "C": -1029.123456789},
        "scale": 1.37,
        "shift": -0.21,
    }
    model = build_model(config, dtype=torch.float64)
    assert model.e0s.tolist() == [-13.6, -1029.123456789] and float(model.scale) == 1.37 and float(model.shift) == -0.21
    loaded = molnet.load_model(molnet.save_model(model, tmp_path / "m.safetensors"), dtype=torch.float64)
    assert loaded.e0s.tolist() == [-13.6, -1029.123456789] and float(loaded.scale) == 1.37
