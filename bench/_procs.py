"""Process helpers for the benchmarks that start servers (no torch, no Django)."""
from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's and nginx's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)
