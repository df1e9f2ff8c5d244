"""The GPU check script, run on the CPU: its comparison code works and the shell script parses."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: a model whose cuequivariance fallback builds in seconds (max_ell 3, ν = 3 takes minutes on a CPU)
SMALL = ["--channels", "8", "--max-ell", "1", "--correlation", "2", "--calls", "1", "--no-save"]


def test_gpu_check_compares_cueq_with_the_plain_path_on_cpu(monkeypatch, capsys):
    pytest.importorskip("cuequivariance_torch")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    gpu_check.main(["--device", "cpu", "--sizes", "30", "--dtypes", "float64", *SMALL])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["kind"] == "gpu" and record["n_atoms"] == 30 and record["device"] == "cpu"
    assert record["cueq"]["agrees"] and record["cueq"]["forces_rel"] < 1e-9
    assert record["plain_s"] > 0 and record["cueq"]["seconds"] > 0


def test_gpu_check_refuses_disagreeing_paths(monkeypatch):
    """A path that disagrees with the plain one ends the check with an error naming it."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    monkeypatch.setattr(gpu_check, "TOLERANCE", {"float64": -1.0})
    pytest.importorskip("cuequivariance_torch")
    with pytest.raises(SystemExit, match="cueq float64 30"):
        gpu_check.main(["--device", "cpu", "--sizes", "30", "--dtypes", "float64", *SMALL])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_shell_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)
