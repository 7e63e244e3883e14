"""The failover benchmark: on the local lab, for one storage method, N runs of
each of
  - a fresh deployment: the lab's VMs destroyed and booted again from the base
    image, the lab's prepare, then site.yml timed;
  - a no-op re-run of site.yml (its changed tasks recorded: 0 expected);
  - a planned switchover (the switchover playbook; alternately there and back);
  - an unplanned failover: the active node powered off (plug pulled).
A client on a VM that stays up (san: the array VM, outside the pair; drbd: the
node that takes over or the switchover's target) writes numbered mail to
BlueMind through the floating IP every 0.5 s (pairstate.CLIENT_PAUSE) during the switchovers and the
failovers; after each, every acknowledged write is read back, and the pair's
invariants are asserted on both nodes (molecule/shared/tests/pairstate.py).

Each failover is broken down from the survivor's logs: detection (until it holds
the floating IP), fencing (its fence agent's power-off of the lost node, when
the storage claim called it: DRBD's fence-peer), the controller's activation
steps (claim, mount, expose, mark, start, ready: its journal), and the first
request the client got acknowledged through the floating IP.

    make benchmark LAB_STORAGE=drbd BENCH_RUNS=5   # or: .venv/bin/python tests/lab/benchmark.py --storage drbd --runs 5

Results go to LOGS/benchmark/ (LOGS: ~/.cache/bluemind-ha-lab/logs):
benchmark-<storage>.json (every run, the machine it ran on), benchmark-<storage>.md
(a table), and bluemind-failover-<storage>.json, the failovers in the format of
the scenarios' checks, which tools/failover_report.py turns into a table with the
ratio to VRRP's floor and a timeline (SVG). The lab is left deployed and nominal.
Test infrastructure: it drives the lab's VMs (tests/lab/labctl.py), never a
user's servers."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LABCTL = ROOT / "tests" / "lab" / "labctl.py"
EPHEMERAL = ROOT / ".cache" / "lab"
INVENTORY = EPHEMERAL / "hosts.yml"
STEP_LINE = re.compile(r"^activate: step=\w+ outcome=\w+ seconds=[0-9.]+$")


def setup_environment(storage: str) -> None:
    """The environment of `make lab-operations`: the checks' helpers find the lab's
    VMs and topology through it."""
    os.environ.setdefault("MOLECULE_SCENARIO_DIRECTORY", str(ROOT / "molecule" / storage))
    os.environ.setdefault("MOLECULE_SCENARIO_NAME", storage)
    os.environ.setdefault("MOLECULE_EPHEMERAL_DIRECTORY", str(EPHEMERAL))
    os.environ.setdefault("LAB_NAME", f"demo-{storage}")
    # As the Makefile exports them: the collection from this checkout.
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    sys.path.insert(0, str(ROOT / "molecule" / "shared" / "tests"))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 1024 / 1024, 1),
            "kernel": platform.release(), "qemu": qemu.stdout.splitlines()[0] if qemu.stdout else "unknown",
            # labctl boots every VM with -accel tcg (software emulation), whatever /dev/kvm says.
            "acceleration": "tcg (software emulation)"}


def fence_seconds(log: str, lost: str, since: str) -> float | None:
    """The power-off of the lost node in a fence log (the fencing role's agent):
    from its call to its done (or already-off) line, both at or after since
    (%Y-%m-%dT%H:%M:%S); None when the log has no such call."""
    lines = [line for line in log.splitlines() if line[:19] >= since]
    call = next((line for line in lines if f"call: off of peer {lost} " in line), None)
    done = next((line for line in lines if re.search(
        rf"off: (done on {re.escape(lost)} |{re.escape(lost)} .*is already off)", line)), None)
    if not call or not done:
        return None
    stamp = "%Y-%m-%dT%H:%M:%S.%f"
    return round((datetime.datetime.strptime(done[:23], stamp)
                  - datetime.datetime.strptime(call[:23], stamp)).total_seconds(), 2)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)} if values else {}


class Bench:
    def __init__(self, storage: str):
        import labtopo
        import pairstate

        self.labtopo, self.pairstate = labtopo, pairstate
        self.storage = storage
        self.lab = labtopo.lab_name()
        self.nodes = pairstate.NODES
        self.problems: list[str] = []

    def other(self, node: str) -> str:
        return next(n for n in self.nodes if n != node)

    def forget_vms(self) -> None:
        self.labtopo.vm.cache_clear()
        self.labtopo.instances.cache_clear()

    def playbook(self, name: str, extra: dict | None = None) -> tuple[dict, float]:
        started = time.monotonic()
        report = self.labtopo.run_playbook(name, INVENTORY, extra, timeout=3600)
        took = round(time.monotonic() - started, 1)
        if report["rc"] != 0:
            failed = [str(r.get("msg", "")) for n, h, r in self.labtopo.task_results(report) if r["status"] == "failed"]
            raise RuntimeError(f"{name} failed (rc {report['rc']}): {failed[:3]} {report['stderr'][-2000:]}")
        return report, took

    @staticmethod
    def changed(report: dict) -> int:
        return sum(stats.get("changed", 0) for stats in report["stats"].values())

    def fresh_site(self) -> dict:
        """Destroy the lab, boot it from the base image, prepare it, time site.yml."""
        python = sys.executable
        subprocess.run([python, str(LABCTL), "down", "--lab", self.lab], check=True, capture_output=True)
        started = time.monotonic()
        subprocess.run([python, str(LABCTL), "up", "--lab", self.lab,
                        "--spec", str(ROOT / "molecule" / self.storage / "molecule.yml"),
                        "--inventory", str(INVENTORY), "--instance-config", str(EPHEMERAL / "instance_config.yml")],
                       check=True, capture_output=True)
        boot = round(time.monotonic() - started, 1)
        self.forget_vms()
        prepare = subprocess.run([str(Path(python).parent / "ansible-playbook"), "-i", str(INVENTORY),
                                  "-e", f"lab_name_override={self.lab}", str(ROOT / "molecule" / "shared" / "prepare.yml")],
                                 capture_output=True, text=True, check=False)
        if prepare.returncode != 0:
            raise RuntimeError(f"prepare failed: {prepare.stdout[-3000:]}{prepare.stderr[-2000:]}")
        report, took = self.playbook("bluemind_ha.cluster.site")
        active = self.pairstate.assert_pair_invariants()
        return {"seconds": took, "changed": self.changed(report), "boot_seconds": boot, "active": active}

    def noop_site(self) -> dict:
        active = self.pairstate.assert_pair_invariants()
        report, took = self.playbook("bluemind_ha.cluster.site")
        changed = self.changed(report)
        if changed:
            names = sorted({f"{h}: {n}" for n, h, r in self.labtopo.task_results(report) if r.get("changed")})
            self.problems.append(f"a no-op site.yml changed {changed} task(s): {names[:5]}")
        if self.pairstate.assert_pair_invariants() != active:
            self.problems.append("a no-op site.yml moved the service")
        return {"seconds": took, "changed": changed}

    def switchover(self, run: int) -> dict:
        source = self.pairstate.assert_pair_invariants()
        target = self.other(source)
        client = self.pairstate.Client(self.pairstate.client_host(target), f"bench-switch{run}-{int(time.time())}")
        self.labtopo.wait_for(lambda: len(client.acked) > 10, 60, "the client to make progress")
        report, took = self.playbook("bluemind_ha.cluster.switchover")
        after = len(client.acked)
        self.labtopo.wait_for(lambda: len(client.acked) > after + 10, 120, "the client to write to the new active node")
        client.stop()
        measured = next(r["ansible_facts"]["bluemind_ha_switchover"] for n, h, r in self.labtopo.task_results(report)
                        if "bluemind_ha_switchover" in r.get("ansible_facts", {}))
        now_active = self.pairstate.assert_pair_invariants(client)
        if now_active != target:
            self.problems.append(f"switchover {run}: the service is on {now_active}, not {target}")
        return {"from": source, "to": target, "playbook_seconds": took,
                "unavailable_seconds": measured["unavailable_seconds"], "stop_seconds": measured["stop_seconds"],
                "start_seconds": measured["start_seconds"], "client_acknowledged": len(client.acked),
                "client_errors": len(client.errors), "client_error_window_seconds": client.error_window(),
                "writes_lost": 0}

    def fence_seconds(self, survivor: str, lost: str, since: str) -> float | None:
        log = self.labtopo.vm(survivor).run("cat /var/log/bluemind-ha/fence.log").stdout
        return fence_seconds(log, lost, since)

    def failover(self, run: int) -> dict:
        labtopo, pairstate = self.labtopo, self.pairstate
        active = pairstate.assert_pair_invariants()
        survivor = self.other(active)
        labtopo.wait_for(lambda: pairstate.ready_to_take_over(survivor), 600,
                         f"{survivor} to be ready to take over")
        client = pairstate.Client(pairstate.client_host(survivor), f"bench-fail{run}-{int(time.time())}")
        labtopo.wait_for(lambda: len(client.acked) > 10, 60, "the client to make progress")
        since = labtopo.vm(survivor).check_output("date +%Y-%m-%dT%H:%M:%S")
        t0 = time.time()
        labtopo.labctl("power", self.lab, active, "off")
        vip = labtopo.wait_vip(survivor, pairstate.VIP, 60) - t0
        first = labtopo.wait_for(lambda: client.first_ack_after(t0), 600, "a request acknowledged after the power-off")
        client.stop()
        lost = client.unreadable()
        if lost:
            self.problems.append(f"failover {run}: acknowledged writes lost: {lost[:10]}")
        steps = [line for line in labtopo.vm(survivor).check_output(
            "journalctl -b --no-pager -t bluemind-ha -o cat | grep -E '^activate: step=' | tail -6").splitlines()
            if STEP_LINE.match(line)]
        fence = self.fence_seconds(survivor, active, since)
        if self.storage == "drbd":
            # Powered on before the survivor's DRBD fencing ran, the node would be
            # switched off again as it boots.
            labtopo.wait_for(lambda: pairstate.fenced_since(survivor, active, since), 180,
                             f"{survivor} to fence {active}")
        labtopo.labctl("power", self.lab, active, "on", "--wait")
        self.forget_vms()
        labtopo.wait_for(lambda: pairstate.ready_to_take_over(active), 900,
                         f"{active} to be ready to take over again")
        if pairstate.assert_pair_invariants() != survivor:
            self.problems.append(f"failover {run}: the service left {survivor} when {active} came back")
        entry = {"from": active, "to": survivor, "seconds": round(first[2] - t0, 2), "vip_seconds": round(vip, 2),
                 "steps": steps, "writes_acknowledged": len(client.acked), "writes_lost": len(lost),
                 "client_errors": len(client.errors), "client_error_window_seconds": client.error_window()}
        if fence is not None:
            entry["fence_seconds"] = fence
        return entry


def markdown(data: dict) -> str:
    rows = [("fresh deployment: site.yml", [r["seconds"] for r in data["fresh_site"]], ""),
            ("no-op re-run of site.yml", [r["seconds"] for r in data["noop_site"]],
             f"changed tasks: {[r['changed'] for r in data['noop_site']]}"),
            ("switchover: unavailable (playbook)", [r["unavailable_seconds"] for r in data["switchover"]],
             f"writes lost: {sum(r['writes_lost'] for r in data['switchover'])}"),
            ("switchover: the client's error window", [r["client_error_window_seconds"] for r in data["switchover"]], ""),
            ("power-off failover: first request acknowledged", [r["seconds"] for r in data["failover"]],
             f"writes lost: {sum(r['writes_lost'] for r in data['failover'])}"),
            ("power-off failover: floating IP on the survivor", [r["vip_seconds"] for r in data["failover"]], "")]
    m = data["machine"]
    lines = [f"Benchmark, {data['storage']}, {data['runs']} run(s) each, {data['date']}; machine: {m['cpu']}, "
             f"{m['cores']} cores, {m['memory_gib']} GiB, {m['acceleration']}.", "",
             "| measure | runs | median s | min s | max s | notes |", "|---|---|---|---|---|---|"]
    for name, values, note in rows:
        if values:
            s = summary(values)
            lines.append(f"| {name} | {len(values)} | {s['median']} | {s['min']} | {s['max']} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--storage", choices=("drbd", "san"), default=os.environ.get("LAB_STORAGE", "drbd"))
    parser.add_argument("--runs", type=int, default=5, help="runs of each measure (default 5)")
    parser.add_argument("--fresh-runs", type=int,
                        help="fresh deployments (default: --runs; 0 to reuse the lab `make lab` deployed)")
    parser.add_argument("--out", type=Path, help="default: LAB_CACHE_DIR/logs/benchmark")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    fresh_runs = args.runs if args.fresh_runs is None else args.fresh_runs
    setup_environment(args.storage)
    out = args.out or Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab")) / "logs" / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.storage)
    data = {"storage": args.storage, "runs": args.runs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(), "fresh_site": [], "noop_site": [], "switchover": [], "failover": []}

    def save():
        (out / f"benchmark-{args.storage}.json").write_text(json.dumps(data, indent=2) + "\n")
        runs = data["failover"]
        if runs:
            (out / f"bluemind-failover-{args.storage}.json").write_text(json.dumps({"runs": runs}, indent=2) + "\n")

    plan = ([("fresh_site", bench.fresh_site)] * fresh_runs + [("noop_site", bench.noop_site)] * args.runs
            + [("switchover", bench.switchover)] * args.runs + [("failover", bench.failover)] * args.runs)
    for key, measure in plan:
        number = len(data[key]) + 1
        started = time.monotonic()
        result = measure(number) if key in ("switchover", "failover") else measure()
        data[key].append(result)
        save()
        print(f"[benchmark {time.strftime('%H:%M:%S')}] {key} {number}: {json.dumps(result)[:300]}"
              f" ({time.monotonic() - started:.0f} s)", flush=True)
    data["problems"] = bench.problems
    save()
    table = markdown(data)
    (out / f"benchmark-{args.storage}.md").write_text(table)
    print(table, end="")
    for problem in bench.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
