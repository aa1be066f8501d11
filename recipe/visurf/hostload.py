"""How much of this machine's CPU a measurement actually had: the hypervisor's steal share.

On a shared VM the hypervisor gives part of the CPU time to other guests ("steal", the 8th field of
``/proc/stat``'s ``cpu`` line). A wall time measured at 30 % steal is not a budget at 0 %, and a
ratio of two runs is only meaningful if both ran under similar steal. The micro reproduction's driver
records the share next to each invocation's wall time, and ``bench/bench_step.py`` next to each run.
"""

from __future__ import annotations

from pathlib import Path


def cpu_steal(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """``(steal, total)`` jiffies of all CPUs from the ``cpu`` line of ``/proc/stat`` (fields user nice
    system idle iowait irq softirq steal ...; guest time is already inside user/nice), None where the
    file does not exist. The share of steal between two readings is the share of the machine's CPU time
    the hypervisor gave to other guests: a wall time measured at 40 % steal is not a budget at 0 %."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    vals = [int(v) for v in fields[1:9]]
    return vals[7], sum(vals)


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """Δsteal / Δtotal between two ``cpu_steal`` readings, rounded to 3 places; None if either is missing."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round((end[0] - start[0]) / (end[1] - start[1]), 3)
