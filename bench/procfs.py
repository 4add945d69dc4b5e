"""CPU time, memory and sockets of processes, read from Linux's /proc.

The benches measure the services a stack started (by pid) and the whole machine, not
only themselves: ``resource.getrusage`` sees only this process and its waited children.
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None once
    the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """Every live process whose parent is ``pid`` (all threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    return [pid, *(p for child in children(pid) for p in process_tree(child))]


def own_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime: the process and its children that exited and were
    waited for (an FFmpeg a worker ran, a PostgreSQL backend that ended), or 0 when the
    process is gone."""
    fields = stat_fields(pid)
    return 0.0 if fields is None else sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, living or exited and waited for."""
    return sum(own_cpu_seconds(p) for p in process_tree(pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since
    boot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int:
    """VmHWM of the process (its peak resident set), or 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    found = [line.split()[1] for line in lines if line.startswith("VmHWM:")]
    return int(found[0]) * 1024 if found else 0


def reset_peak_rss(pid: int) -> bool:
    """Make the process's VmHWM its current RSS (clear_refs 5 touches nothing else), so a
    peak is the run's, not a previous job's; False when not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` has open."""
    inodes: set[str] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def tcp_sockets() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every TCP socket of the machine."""
    rows = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            rows.append((local, remote, fields[3], fields[9]))
    return rows


def listener_pid(port: int) -> int | None:
    """The process listening on ``port`` (the postmaster, the Kafka broker), whichever
    stack started it."""
    listening = {
        inode for local, _, state, inode in tcp_sockets() if local == port and state == "0A"
    }
    for proc in Path("/proc").glob("[0-9]*"):
        if listening & socket_inodes(int(proc.name)):
            return int(proc.name)
    return None
