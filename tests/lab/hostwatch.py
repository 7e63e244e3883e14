"""Whether the machine under a lab was oversubscribed while a scenario ran.

Test infrastructure, not part of the collection. A failover check that fails on a
host running other labs (issue 27: three labs, about 4 guest vCPUs per core) says
nothing about the product; the suite's report must tell the two apart. The watch
samples, every few seconds while a scenario runs, from the host's /proc and the
lab processes (labctl.lab_processes):
- the host's CPU use and 1-minute load average;
- the lab VMs running, and their vCPUs: this scenario's own, and other labs'.
At the end it adds what the guests said on their serial consoles (kept by
labctl down): soft lockups, RCU stalls, hung tasks, which is how a guest tells
that the emulator stopped scheduling it.

The verdict, "oversubscribed", needs evidence, not a load figure alone:
- another lab's VMs ran beside the scenario's (the case issue 27 saw); or
- a guest reported a stall.
Load and CPU use are reported either way (the suite alone keeps the 2 cores busy
most of the time under emulation, so they cannot tell by themselves)."""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Console lines that say a guest's vCPUs were not scheduled for long: the kernel's
# soft lockup detector and RCU stall warnings (printed at levels the lab's `quiet`
# console keeps), hung tasks, and the panic that softlockup_panic turns a lockup
# into. (The image's NIC watchdog resets are an emulator failure, not a sign of
# load: run_suite reports them apart.)
STALL_MARKERS = re.compile(
    r"BUG: soft lockup|detected stalls? on CPUs|self-detected stall|rcu_preempt kthread timer wakeup"
    r"|blocked for more than \d+ seconds|not syncing: softlockup")
# The host is itself a VM: when its hypervisor takes more than this share of its
# CPU time (steal), every guest step is slower than the suite's bounds assume.
STEAL_LIMIT = 0.10


def cpu_times(proc: Path = Path("/proc")) -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs since boot, from /proc/stat.
    Steal is the time the hypervisor ran something else while this host (itself
    a VM) wanted its CPUs: counted as busy here, and reported apart."""
    fields = [int(x) for x in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields) - idle, sum(fields), steal


def load1(proc: Path = Path("/proc")) -> float:
    return float((proc / "loadavg").read_text().split()[0])


def vcpus(argv: list[str]) -> int:
    """A QEMU process's vCPUs (-smp N or -smp N,...; 1 without -smp)."""
    if "-smp" in argv[:-1]:
        value = argv[argv.index("-smp") + 1].split(",")[0]
        return int(value.removeprefix("cpus=")) if value.removeprefix("cpus=").isdigit() else 1
    return 1


def lab_of(name: str) -> str:
    """lab-<lab>-<vm> -> <lab> (VM names have no dash in the lab's topologies)."""
    return name.removeprefix("lab-").rsplit("-", 1)[0]


@dataclass
class Sample:
    at: float
    busy: float          # share of the host's CPU time used since the previous sample, 0..1
    load1: float
    own_vcpus: int
    other_labs: dict[str, int]   # lab -> vCPUs
    steal: float = 0.0   # share of the host's CPU time its hypervisor took, 0..1


@dataclass
class Report:
    lab: str
    cores: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)

    @property
    def other_labs(self) -> dict[str, int]:
        seen: dict[str, int] = {}
        for sample in self.samples:
            for lab, count in sample.other_labs.items():
                seen[lab] = max(seen.get(lab, 0), count)
        return seen

    @property
    def shared_seconds(self) -> float:
        """About how long other labs ran beside this one (samples that saw one,
        times the sampling interval)."""
        shared = [s for s in self.samples if s.other_labs]
        if len(self.samples) < 2:
            return 0.0 if not shared else self.seconds
        interval = self.seconds / len(self.samples)
        return len(shared) * interval

    @property
    def steal(self) -> float:
        """Mean share of the host's CPU time its hypervisor took (0..1)."""
        return sum(s.steal for s in self.samples) / len(self.samples) if self.samples else 0.0

    @property
    def oversubscribed(self) -> bool:
        return bool(self.other_labs or self.stalls or self.steal > STEAL_LIMIT)

    def reasons(self) -> list[str]:
        out = []
        if self.other_labs:
            labs = ", ".join(f"{lab} ({count} vCPUs)" for lab, count in sorted(self.other_labs.items()))
            out.append(f"other labs ran beside it for about {self.shared_seconds:.0f} s: {labs}")
        if self.stalls:
            out.append(f"the guests reported {len(self.stalls)} stall(s), first: {self.stalls[0]}")
        if self.steal > STEAL_LIMIT:
            out.append(f"the hypervisor under this host took {100 * self.steal:.0f}% of its CPU time (steal)")
        return out

    def summary(self) -> str:
        busy = [s.busy for s in self.samples]
        loads = [s.load1 for s in self.samples]
        own = max((s.own_vcpus for s in self.samples), default=0)
        figures = (f"{self.cores} CPU(s), this lab's VMs {own} vCPU(s); CPU busy "
                   + (f"{100 * sum(busy) / len(busy):.0f}% on average" if busy else "not sampled")
                   + (f", load average (1 min) mean {sum(loads) / len(loads):.1f} max {max(loads):.1f}"
                      if loads else "")
                   + (f", steal {100 * self.steal:.0f}%" if busy else ""))
        if self.oversubscribed:
            return (f"host OVERSUBSCRIBED during {self.lab} ({figures}): " + "; ".join(self.reasons())
                    + ". A failed check here may be the host's, not the product's: run it again alone.")
        return f"host not oversubscribed during {self.lab} ({figures}; no other lab, no guest stall)"

    def verdict(self) -> str:
        """One word for the suite's summary table."""
        return "host OVERSUBSCRIBED" if self.oversubscribed else "host ok"


class HostWatch:
    """Samples the host every `interval` seconds in a thread, from start() to stop()."""

    def __init__(self, lab: str, processes: Callable[[], list[dict]], interval: float = 5.0,
                 proc: Path = Path("/proc")):
        self.lab, self.processes, self.interval, self.proc = lab, processes, interval, proc
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._last = (0, 0, 0)

    def sample(self) -> None:
        busy, total, steal = cpu_times(self.proc)
        last_busy, last_total, last_steal = self._last
        share = (busy - last_busy) / (total - last_total) if total > last_total else 0.0
        stolen = (steal - last_steal) / (total - last_total) if total > last_total else 0.0
        self._last = (busy, total, steal)
        own, others = 0, {}
        for process in self.processes():
            lab = lab_of(process["name"])
            count = vcpus(process["argv"])
            if lab == self.lab:
                own += count
            else:
                others[lab] = others.get(lab, 0) + count
        self.samples.append(Sample(time.time(), share, load1(self.proc), own, others, stolen))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except (OSError, ValueError, IndexError):
                continue

    def start(self) -> HostWatch:
        self._started = time.monotonic()
        self._last = cpu_times(self.proc)
        self._thread = threading.Thread(target=self._run, name=f"hostwatch-{self.lab}", daemon=True)
        self._thread.start()
        return self

    def stop(self, consoles: list[Path] = ()) -> Report:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 5)
        stalls = []
        for console in consoles:
            vm = console.name.removesuffix("-console.log")
            try:
                text = console.read_text(errors="replace")
            except OSError:
                continue
            stalls += [f"{vm}: {line.strip()}" for line in text.splitlines() if STALL_MARKERS.search(line)]
        return Report(self.lab, os.cpu_count() or 1, time.monotonic() - self._started, list(self.samples), stalls)
