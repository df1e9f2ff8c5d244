"""Peak resident memory of the calling process, for the memory benchmarks.

Linux keeps a process's ``getrusage(RUSAGE_SELF).ru_maxrss`` across ``execve`` and starts a
forked child's at its parent's resident size: a benchmark worker started from a driver that holds
360 MB reports at least 360 MB however little it uses itself. ``VmHWM`` in ``/proc/self/status``
is the high-water mark of the process's own address space, which ``execve`` starts afresh.

References:
    Linux ``fs/exec.c`` (``exec_mmap`` saves the old address space's high-water mark into the
    signal struct's ``maxrss``) and ``proc(5)`` (``VmHWM``).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")


def peak_rss_mib() -> float:
    """Peak resident set size of this process's own address space so far (MiB).

    ``VmHWM`` where ``/proc`` has it (Linux); elsewhere ``ru_maxrss``, which on macOS is in bytes
    and on other systems in KiB, and may include the parent's usage (see the module docstring).
    """
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # "VmHWM:   123456 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0
