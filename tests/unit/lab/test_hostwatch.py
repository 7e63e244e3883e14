"""tests/lab/hostwatch.py: how the suite tells an oversubscribed host from a
product failure (issue 27). A fake /proc and fake lab processes stand in for the
machine."""
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
import hostwatch  # noqa: E402  pylint: disable=wrong-import-position


def fake_proc(tmp_path: Path, busy: int, idle: int, load: float, steal: int = 0) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    # user nice system idle iowait irq softirq steal
    (proc / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\n")
    (proc / "loadavg").write_text(f"{load} 1.00 0.50 2/200 4242\n")
    return proc


def qemu(lab: str, vm: str, smp: str) -> dict:
    name = f"lab-{lab}-{vm}"
    return {"pid": 1, "name": name, "lab_dir": None,
            "argv": ["qemu-system-x86_64", "-name", f"{name},process={name}", "-smp", smp]}


def watch_with(tmp_path, processes, samples):
    """A watch driven by hand: `samples` (busy, idle, load) after the start's (0, 0)."""
    proc = fake_proc(tmp_path, 0, 0, 0.0)
    watch = hostwatch.HostWatch("molecule-drbd", lambda: processes, interval=3600, proc=proc).start()
    for busy, idle, load in samples:
        fake_proc(tmp_path, busy, idle, load)
        watch.sample()
    return watch


def test_vcpus_and_lab_names_come_from_the_qemu_command_line():
    assert hostwatch.vcpus(qemu("a", "node1", "2")["argv"]) == 2
    assert hostwatch.vcpus(qemu("a", "node1", "cpus=4,sockets=1")["argv"]) == 4
    assert hostwatch.vcpus(["qemu-system-x86_64"]) == 1
    assert hostwatch.lab_of("lab-molecule-drbd-node1") == "molecule-drbd"
    assert hostwatch.lab_of("lab-demo-san-client") == "demo-san"


def test_a_scenario_alone_on_a_busy_host_is_not_oversubscribed(tmp_path):
    own = [qemu("molecule-drbd", "node1", "2"), qemu("molecule-drbd", "node2", "2"), qemu("molecule-drbd", "client", "1")]
    report = watch_with(tmp_path, own, [(90, 10, 4.5), (180, 20, 3.5)]).stop([])
    assert not report.oversubscribed and report.verdict() == "host ok"
    assert [round(s.busy, 2) for s in report.samples] == [0.9, 0.9]
    assert report.samples[0].own_vcpus == 5 and report.other_labs == {}
    summary = report.summary()
    assert summary.startswith("host not oversubscribed during molecule-drbd")
    assert "5 vCPU(s)" in summary and "CPU busy 90% on average" in summary and "max 4.5" in summary


def test_other_labs_beside_the_scenario_make_it_oversubscribed(tmp_path):
    own = [qemu("molecule-drbd", "node1", "2")]
    others = own + [qemu("demo-san", "node1", "2"), qemu("demo-san", "node2", "2"), qemu("demo-drbd", "node1", "2")]
    watch = watch_with(tmp_path, own, [(50, 50, 1.0)])
    watch.processes = lambda: others
    fake_proc(tmp_path, 150, 50, 9.0)
    watch.sample()
    report = watch.stop([])
    assert report.oversubscribed and report.verdict() == "host OVERSUBSCRIBED"
    assert report.other_labs == {"demo-san": 4, "demo-drbd": 2}
    summary = report.summary()
    assert "demo-san (4 vCPUs)" in summary and "may be the host's, not the product's" in summary


@pytest.mark.parametrize("line,stall", [
    ("[  912.1] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [qemu:123]", True),
    ("[  913.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", True),
    ("[  913.0] rcu: INFO: rcu_preempt self-detected stall on CPU", True),
    ("[  920.0] INFO: task jbd2/vda-8:150 blocked for more than 120 seconds.", True),
    ("[  930.0] Kernel panic - not syncing: softlockup: hung tasks", True),
    ("[  940.0] lab-nic-watchdog: eth1 stopped transmitting, resetting it", False),
    ("[  950.0] drbd bluemind: Connected", False),
])
def test_guest_stalls_on_the_consoles_make_it_oversubscribed(tmp_path, line, stall):
    console = tmp_path / "node2-console.log"
    console.write_text(f"[    1.0] booting\n{line}\n")
    report = watch_with(tmp_path, [], [(10, 90, 0.5)]).stop([console])
    assert report.oversubscribed is stall
    if stall:
        assert report.stalls == [f"node2: {line}"] and "1 stall(s)" in report.summary()


def test_the_thread_samples_until_stopped(tmp_path):
    proc = fake_proc(tmp_path, 10, 10, 1.0)
    watch = hostwatch.HostWatch("molecule-san", lambda: [], interval=0.01, proc=proc).start()
    deadline = time.monotonic() + 5
    while len(watch.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    report = watch.stop([])
    assert len(report.samples) >= 3 and report.seconds > 0


def test_a_host_whose_hypervisor_takes_its_cpu_is_oversubscribed(tmp_path):
    own = [qemu("molecule-drbd", "node1", "2")]
    proc = fake_proc(tmp_path, 0, 0, 0.0)
    watch = hostwatch.HostWatch("molecule-drbd", lambda: own, interval=3600, proc=proc).start()
    # 100 jiffies per sample: 60 user, 25 steal (busy 85), 15 idle.
    for n in (1, 2):
        fake_proc(tmp_path, 60 * n, 15 * n, 3.0, steal=25 * n)
        watch.sample()
    report = watch.stop([])
    assert [round(s.steal, 2) for s in report.samples] == [0.25, 0.25]
    assert report.oversubscribed and report.verdict() == "host OVERSUBSCRIBED"
    assert "took 25% of its CPU time (steal)" in report.summary() and "steal 25%" in report.summary()


def test_a_little_steal_is_reported_but_not_a_verdict(tmp_path):
    own = [qemu("molecule-drbd", "node1", "2")]
    proc = fake_proc(tmp_path, 0, 0, 0.0)
    watch = hostwatch.HostWatch("molecule-drbd", lambda: own, interval=3600, proc=proc).start()
    fake_proc(tmp_path, 90, 8, 3.0, steal=2)
    watch.sample()
    report = watch.stop([])
    assert not report.oversubscribed and "steal 2%" in report.summary()
