"""The `molnet` command line as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

from molnet.data import bundled_path

MOLNET = [sys.executable, "-m", "molnet.cli"]


def run(*args, cwd=None):
    return subprocess.run([*MOLNET, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_eval_json_and_plot(tmp_path):
    plot = tmp_path / "parity.png"
    result = run(
        "eval", "--model", "mace-acac", "--data", str(bundled_path("acac", "test")), "--json", "--plot", str(plot)
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    for key in (
        "n_configs",
        "energy_mae_meV",
        "energy_rmse_meV",
        "energy_per_atom_mae_meV",
        "forces_mae_meV_per_A",
        "forces_rmse_meV_per_A",
    ):
        assert key in metrics
    assert metrics["n_configs"] == 200 and metrics["forces_mae_meV_per_A"] < 100
    assert plot.stat().st_size > 10_000


def test_md_default_runs_and_writes_outputs(tmp_path):
    result = run("md", "--steps", "40", "--log-interval", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "md.png").stat().st_size > 10_000
    from ase.io import read

    frames = read(tmp_path / "md.extxyz", index=":")
    assert len(frames) == 5 and len(frames[0]) == 15
    assert "ns/day" in result.stderr or "steps/s" in result.stderr


def test_md_refuses_to_overwrite_and_restarts_where_the_run_stopped(tmp_path, caplog):
    """An existing trajectory is refused (kept byte for byte) unless --overwrite; --restart continues
    from the last frame's positions and velocities: NVE for 4 + 4 steps ends where 8 steps in one
    run end (to the file's printed precision), with the clock and the frames continued."""
    import numpy as np
    from ase.io import read, write

    from molnet.cli import main

    whole, parts, png = tmp_path / "whole.extxyz", tmp_path / "parts.extxyz", str(tmp_path / "md.png")
    nve = ["md", "--ensemble", "nve", "--log-interval", "2", "--plot", png]
    assert main([*nve, "--steps", "8", "--trajectory", str(whole)]) == 0
    assert main([*nve, "--steps", "4", "--trajectory", str(parts)]) == 0
    before = parts.read_bytes()
    assert main([*nve, "--steps", "4", "--trajectory", str(parts)]) == 2
    assert "already exists; continue that run (molnet md --restart), replace it (--overwrite)" in caplog.text
    assert parts.read_bytes() == before
    assert main([*nve, "--steps", "4", "--trajectory", str(parts), "--restart"]) == 0
    one_run, two_runs = read(whole, index=":"), read(parts, index=":")
    assert len(one_run) == len(two_runs) == 5
    assert [f.info["md_time_fs"] for f in two_runs] == [0.0, 1.0, 2.0, 3.0, 4.0]
    np.testing.assert_allclose(two_runs[-1].positions, one_run[-1].positions, atol=1e-6)
    np.testing.assert_allclose(two_runs[-1].get_momenta(), one_run[-1].get_momenta(), atol=1e-6)

    assert main([*nve, "--steps", "2", "--trajectory", str(parts), "--overwrite"]) == 0
    assert len(read(parts, index=":")) == 2
    caplog.clear()
    structure = str(bundled_path("acac", "test"))
    assert main([*nve, "--steps", "2", "--trajectory", str(parts), "--restart", "--structure", structure]) == 2
    assert "drop --structure, --frame and --overwrite" in caplog.text
    assert main([*nve, "--steps", "2", "--trajectory", str(tmp_path / "none.extxyz"), "--restart"]) == 2
    assert "there is no trajectory" in caplog.text
    still = tmp_path / "still.extxyz"
    write(still, read(structure, index=0))
    assert main([*nve, "--steps", "2", "--trajectory", str(still), "--restart"]) == 2
    assert "has no velocities (momenta) or no md_time_fs: it is not a frame of molnet md" in caplog.text
    moving = read(parts, index=-1)  # velocities, but no clock: written by another program
    del moving.info["md_time_fs"]
    write(still, moving)
    assert main([*nve, "--steps", "2", "--trajectory", str(still), "--restart"]) == 2
    assert main([*nve, "--steps", "2", "--trajectory", str(parts), "--restart", "--frame", "1"]) == 2

    # options out of range, or a run that would overwrite its own input, change no file
    kept = parts.read_bytes()
    fresh = str(tmp_path / "fresh.extxyz")
    for options, message in (
        (["--temperature", "-100"], "the temperature must be >= 0 K, got -100.0"),
        (["--timestep", "-1", "--ensemble", "nvt"], "the timestep must be > 0 fs, got -1.0"),
        (["--timestep", "0"], "the timestep must be > 0 fs, got 0.0"),
    ):
        assert main([*nve, "--steps", "2", "--trajectory", fresh, *options]) == 2
        assert message in caplog.text
    assert not Path(fresh).exists()
    assert main([*nve, "--steps", "2", "--trajectory", str(parts), "--overwrite", "--ensemble", "npt"]) == 2
    assert "NPT needs a structure periodic in all three directions" in caplog.text
    assert main([*nve, "--steps", "2", "--structure", str(parts), "--trajectory", str(parts), "--overwrite"]) == 2
    assert "is the structure file itself" in caplog.text
    assert parts.read_bytes() == kept


def test_models_lists_shipped_models():
    result = run("models", "--json")
    names = {e["name"] for e in json.loads(result.stdout)}
    assert {"mace-acac", "mace-ethanol"} <= names
    table = run("models")  # piped, as in `molnet models | grep mace-ethanol`: names are never cut
    assert table.returncode == 0 and all(name in table.stdout for name in names)


def test_bad_input_exits_with_a_clear_message(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\nnot an extxyz header\nH 0 0\n")
    result = run("eval", "--model", "mace-acac", "--data", str(bad))
    assert result.returncode == 2 and "DataError" in result.stderr and "bad.xyz" in result.stderr
    result = run("md", "--model", str(tmp_path / "missing.safetensors"), "--steps", "1")
    assert result.returncode == 2 and "ModelFileError" in result.stderr
    result = run("md", "--structure", str(tmp_path / "missing.xyz"), "--steps", "1")
    assert result.returncode == 2 and "FileNotFoundError" in result.stderr and "missing.xyz" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_of_range_frame_and_self_overwriting_export_are_refused(tmp_path, caplog):
    from ase import Atoms
    from ase.io import write

    from molnet.cli import main

    one = tmp_path / "one.xyz"
    write(one, Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]]))
    assert main(["md", "--structure", str(one), "--frame", "5", "--steps", "1"]) == 2
    assert main(["driver", "--model", "mace-acac", "--structure", str(one), "--frame", "5", "--unix", "nowhere"]) == 2
    assert "one.xyz has 1 frame(s); --frame 5 is out of range" in caplog.text
    # --charge reaches the calculator (a model without a Coulomb block says it cannot use it)
    md = ["md", "--structure", str(one), "--charge", "1", "--steps", "2", "--trajectory", str(tmp_path / "t.extxyz")]
    assert main([*md, "--plot", str(tmp_path / "md.png")]) == 0
    assert "atoms.info['charge'] = 1.0, but this model has no Coulomb block" in caplog.text
    data = tmp_path / "dft.xyz"
    data.write_bytes(bundled_path("acac", "test").read_bytes())
    assert main(["eval", "--model", "mace-acac", "--data", str(data), "--predictions", str(data)]) == 2
    assert data.read_bytes() == bundled_path("acac", "test").read_bytes()
    assert "is the data file itself" in caplog.text
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"a training checkpoint")
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(checkpoint)]) == 2
    assert checkpoint.read_bytes() == b"a training checkpoint"
    assert "is the checkpoint itself" in caplog.text


def test_train_help_is_lightning_cli():
    result = run("train", "--help")
    assert result.returncode == 0 and "--trainer.max_epochs" in result.stdout and "--model.model" in result.stdout


def test_md_of_a_molecule_with_a_distant_atom_needs_the_bond_check_off(tmp_path):
    """A gas-phase system with an atom far from the rest (an H 9 Å from AcAc) stops at step 0 as
    "falling apart" unless --max-bond-distance 0 turns the check off."""
    from ase import Atoms
    from ase.io import read, write

    acac = read(bundled_path("acac", "test"), index=0)
    write(tmp_path / "far.xyz", acac + Atoms("H", positions=[acac.positions.mean(axis=0) + [9.0, 0.0, 0.0]]))
    options = ("--structure", str(tmp_path / "far.xyz"), "--steps", "4", "--log-interval", "2", "--plot", "")
    result = run("md", *options, cwd=tmp_path)
    assert result.returncode == 2 and "have no neighbor within 4.0 Å" in " ".join(result.stderr.split())
    result = run("md", *options, "--max-bond-distance", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
