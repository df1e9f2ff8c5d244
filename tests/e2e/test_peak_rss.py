"""The memory benchmarks' peak RSS is the measured process's own, not its parent's."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A parent that holds ``held`` MiB, then starts a child that reads its own peak two ways.
PARENT = r"""
import json, subprocess, sys
held = bytes([1]) * (int(sys.argv[1]) << 20)  # written, so resident
child = (
    "import json, resource, sys; sys.path.insert(0, sys.argv[1]); from rss import peak_rss_mib; "
    "print(json.dumps([peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))"
)
print(subprocess.run([sys.executable, "-c", child, sys.argv[2]], capture_output=True, text=True, check=True).stdout)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_child_of_a_large_parent_reports_its_own_peak():
    held = 300
    done = subprocess.run(
        [sys.executable, "-c", PARENT, str(held), str(ROOT / "benchmarks")], capture_output=True, text=True, check=True
    )
    own, inherited = json.loads(done.stdout.strip().splitlines()[-1])
    assert inherited > held  # what ru_maxrss reports: the parent's resident size carried into the child
    assert own < 60, f"a bare interpreter's peak should be tens of MiB, got {own:.0f} MiB"
