#!/usr/bin/env python
"""The whole test suite, as ``make test`` and CI run it.

Stages run in order; each is timed and its output streamed. A failed stage does not
stop the ones after it (so one run shows every problem), except that the scenarios
need the image. The last line is the summary a CI reader looks for:
``suite: N passed, N failed``. Lab VMs of the scenarios are removed at the end
whatever happened.

    tests/run_suite.py                 every stage
    tests/run_suite.py lint unit       only these stages
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENARIOS = ["drbd", "san"]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
import hostwatch  # noqa: E402  pylint: disable=wrong-import-position
import labctl  # noqa: E402  pylint: disable=wrong-import-position

# What the host went through during each scenario (hostwatch): shown after the
# scenario and in the summary, so a failure on an oversubscribed host is told
# apart from a product failure.
HOST_REPORTS: dict[str, hostwatch.Report] = {}


# The host's speed, measured at the start of each run and printed first (a CI run
# cut by its time limit prints no summary): one core's time for a fixed loop of
# Python additions. The suite's time scales with it, the scenarios' most (software
# emulation). 1.11 s on the 2-core Intel Xeon guest of 2026-12-07, whose suite ran
# 3938 s (the AMD EPYC guests of earlier runs, 2999-3256 s, were not gauged); a run
# slower than its usual time on a gauge well above its usual reading was slowed by
# the host, not by the change.
GAUGE_STEPS = 20_000_000


def host_gauge(steps: int = GAUGE_STEPS) -> float:
    """Seconds one core takes for `steps` Python additions (the best of two)."""
    best = float("inf")
    for _attempt in range(2):
        t0, total = time.perf_counter(), 0
        for i in range(steps):
            total += i
        best = min(best, time.perf_counter() - t0)
    return best


def gauge_line(seconds: float, steps: int = GAUGE_STEPS) -> str:
    return (f"host speed: {steps // 1_000_000}M Python additions in {seconds:.2f} s on one core"
            f" (1.11 s on the 2-core Xeon guest whose suite ran 3938 s, 2026-12-07)")


def sh(*argv: str, **kwargs) -> int:
    print("+ " + " ".join(argv), flush=True)
    return subprocess.run(list(argv), cwd=kwargs.pop("cwd", ROOT), check=False, **kwargs).returncode


def stage_lint() -> int:
    return sh(str(BIN / "yamllint"), "-s", ".") or sh(str(BIN / "ansible-lint"))


def stage_sanity() -> int:
    return sh(sys.executable, "tests/sanity/run.py")


def stage_unit() -> int:
    return sh(str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "tests/unit")


def stage_changelog() -> int:
    return sh(str(BIN / "antsibull-changelog"), "lint")


def stage_docs_lint() -> int:
    """The collection's documentation as the ecosystem's docs build reads it:
    antsibull-docs lint-collection-docs with every module's DOCUMENTATION and every
    role's argument_specs (tools/docs_site.py; its virtual environment,
    .cache/venv-docs, is made on the first run). `make docs` builds the site."""
    return sh(sys.executable, "tools/docs_site.py", "lint")


def stage_build() -> int:
    """The tarball installs, and its playbooks and modules resolve by FQCN from it alone."""
    with tempfile.TemporaryDirectory(prefix="bmha-build-") as tmp:
        rc = sh(str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", tmp)
        tarballs = list(Path(tmp).glob("bluemind_ha-cluster-*.tar.gz"))
        if rc or len(tarballs) != 1:
            return rc or 1
        installed = Path(tmp) / "installed"
        # Only the installed tarball is visible from here on, not the checkout.
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed))
        env.pop("ANSIBLE_CONFIG", None)
        rc = sh(str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(installed),
                str(tarballs[0]), cwd=tmp, env=env)
        if rc or not (installed / "ansible_collections" / "bluemind_ha" / "cluster" / "MANIFEST.json").exists():
            print("the tarball did not install")
            return rc or 1
        content = subprocess.run(["tar", "-tzf", str(tarballs[0])], capture_output=True, text=True, check=True).stdout
        for forbidden in ("molecule/", "tests/lab/", ".venv/"):
            if forbidden in content:
                print(f"the tarball contains {forbidden}: build_ignore is incomplete")
                return 1
        inventory = Path(tmp) / "inventory.yml"
        inventory.write_text("bluemind_ha:\n  hosts:\n    node1:\n    node2:\n")
        for playbook in sorted((ROOT / "playbooks").glob("*.yml")):
            rc = sh(str(BIN / "ansible-playbook"), "-i", str(inventory), "--syntax-check",
                    f"bluemind_ha.cluster.{playbook.stem}", cwd=tmp, env=env)
            if rc:
                return rc
        for module in sorted((ROOT / "plugins" / "modules").glob("*.py")):
            rc = subprocess.run([str(BIN / "ansible-doc"), "-t", "module", f"bluemind_ha.cluster.{module.stem}"],
                                cwd=tmp, env=env, capture_output=True, text=True, check=False)
            if rc.returncode:
                print(rc.stderr)
                return rc.returncode
            print(f"ansible-doc bluemind_ha.cluster.{module.stem}: ok")
        return check_execution_environment(Path(tmp), tarballs[0], installed)


def check_execution_environment(tmp: Path, tarball: Path, installed: Path) -> int:
    """The execution environment (issue 31): ansible-builder's introspection of
    the installed tarball finds the collection's requirements (its
    meta/execution-environment.yml), and `ansible-builder create` writes a build
    context from the example definition (no container engine needed for that)."""
    builder = str(BIN / "ansible-builder")
    found = subprocess.run([builder, "introspect", "--sanitize", str(installed)],
                           capture_output=True, text=True, check=False)
    print(found.stdout + found.stderr)
    if found.returncode or "netaddr" not in found.stdout or "openssh-client" not in found.stdout:
        print("ansible-builder introspect did not find the collection's requirements (meta/execution-environment.yml)")
        return found.returncode or 1
    definition = ROOT / "docs" / "examples" / "ee" / "execution-environment.yml"
    work = tmp / "ee"
    work.mkdir()
    (work / definition.name).write_text(definition.read_text())
    (work / tarball.name).write_bytes(tarball.read_bytes())
    rc = sh(builder, "create", "-f", str(work / definition.name), "-c", str(work / "context"),
            "--output-filename", "Containerfile", cwd=work)
    containerfile = work / "context" / "Containerfile"
    if rc or not containerfile.exists() or not (work / "context" / "_build" / "collections" / tarball.name).exists():
        print("ansible-builder create wrote no build context with the collection's tarball")
        return rc or 1
    text = containerfile.read_text()
    if "ansible-galaxy" not in text or tarball.name not in text:
        print("the Containerfile neither copies the collection's tarball nor installs collections")
        return 1
    print(f"execution environment: build context in {work / 'context'} ({len(text.splitlines())} Containerfile lines)")
    return 0


def stage_image() -> int:
    return sh(sys.executable, "tests/lab/labctl.py", "image")


def logs_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab")) / "logs"


def show_consoles(lab: str) -> None:
    """The tail of each VM's serial console, kept by labctl down: a kernel
    message or a hung boot explains many a failed scenario."""
    logs = logs_dir() / lab
    for log in sorted(logs.glob("*-console.log")):
        lines = log.read_text(errors="replace").splitlines()[-25:]
        print(f"----- {log.name} (last {len(lines)} lines) -----")
        print("\n".join(lines))


# What the lab does when the emulator fails a VM, as its console shows it: the
# image's NIC watchdog resets an emulated NIC that stopped sending
# (tests/lab/image/files/usr/local/sbin/lab-nic-watchdog); a guest whose vCPUs
# are no longer scheduled panics on its soft lockup and reboots (softlockup_panic,
# tests/lab/labctl.py).
LAB_RECOVERIES = ("lab-nic-watchdog: ", "not syncing: softlockup")


def lab_recoveries(lab: str, since: float) -> list[str]:
    """The console lines of LAB_RECOVERIES, from the consoles labctl down kept
    after `since`: a run that passed despite one says so."""
    found = []
    for log in sorted((logs_dir() / lab).glob("*-console.log")):
        if log.stat().st_mtime < since:
            continue
        vm = log.name.removesuffix("-console.log")
        found += [f"{vm}: {line.strip()}" for line in log.read_text(errors="replace").splitlines()
                  if any(marker in line for marker in LAB_RECOVERIES)]
    return found


def digest(lines: list[str], width: int = 300) -> list[str]:
    """What a reader of a failed scenario's tail needs from pytest's output: the
    failures' error lines ("E", the first ones), the short test summary and the
    slowest checks, which all sit far above the tail (molecule's recap, the
    destroy, the consoles)."""
    out: list[str] = []
    # The FAILURES section's lines first (pytest prints the ERRORS of fixtures
    # above it, often a consequence), each distinct line once.
    failures = next((i for i, line in enumerate(lines) if line.startswith("=") and " FAILURES " in line), 0)
    errors = list(dict.fromkeys(line for line in lines[failures:] + lines[:failures] if line.startswith("E ")))
    if errors:
        out.append("error lines:")
        out.extend(line[:width] for line in errors[:12])
    summary = next((i for i, line in enumerate(lines) if "short test summary info" in line), None)
    if summary is not None:
        out.append("short test summary:")
        for line in lines[summary + 1:]:
            if line.startswith("="):
                break
            out.append(line[:width])
    durations = next((i for i, line in enumerate(lines) if "slowest" in line and "durations" in line), None)
    if durations is not None:
        out.append("slowest checks:")
        for line in lines[durations + 1:]:
            if not line.strip() or line.startswith("="):
                break
            out.append(line[:width])
    return out


def scenario(name: str):
    def run() -> int:
        """molecule test, streamed and kept in the cache's logs (the whole of it,
        for whoever reads a failed run later on the same machine)."""
        argv = [str(BIN / "molecule"), "test", "-s", name]
        print("+ " + " ".join(argv), flush=True)
        log = logs_dir() / f"molecule-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        started = time.time()
        watch = hostwatch.HostWatch(f"molecule-{name}", labctl.lab_processes).start()
        with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace") as proc, log.open("w") as kept:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                kept.write(line)
                lines.append(line.rstrip("\n"))
        rc = proc.returncode
        consoles = [c for c in sorted((logs_dir() / f"molecule-{name}").glob("*-console.log"))
                    if c.stat().st_mtime >= started]
        host = HOST_REPORTS[f"molecule-{name}"] = watch.stop(consoles)
        print(f"----- molecule-{name}: {host.summary()}")
        recoveries = lab_recoveries(f"molecule-{name}", started)
        if recoveries:
            print(f"----- molecule-{name}: the lab recovered a VM the emulator failed (NIC reset, lockup reboot) -----")
            print("\n".join(recoveries))
        if rc != 0:
            show_consoles(f"molecule-{name}")
            print(f"----- molecule-{name}: what failed (whole log: {log}) -----")
            print("\n".join(digest(lines)))
        return rc
    run.__name__ = f"stage_molecule_{name}"
    return run


STAGES = {
    "lint": stage_lint,
    "changelog": stage_changelog,
    "docs-lint": stage_docs_lint,
    "sanity": stage_sanity,
    "unit": stage_unit,
    "build": stage_build,
    "image": stage_image,
    **{f"molecule-{s}": scenario(s) for s in SCENARIOS},
}


def cleanup(ran: list[str]) -> None:
    """Take down the labs of the scenarios this run started (and only those: a
    lint-only run must not kill a scenario another run is testing)."""
    for name in SCENARIOS:
        if f"molecule-{name}" not in ran:
            continue
        subprocess.run([sys.executable, "tests/lab/labctl.py", "down", "--lab", f"molecule-{name}"],
                       cwd=ROOT, capture_output=True, check=False)


def main(selected: list[str]) -> int:
    unknown = [s for s in selected if s not in STAGES]
    if unknown:
        print(f"unknown stage(s): {', '.join(unknown)}; stages: {', '.join(STAGES)}")
        return 2
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections"))
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    os.environ.setdefault("PY_COLORS", "0")
    os.environ.setdefault("ANSIBLE_FORCE_COLOR", "0")
    results: list[tuple[str, str, float]] = []
    started: list[str] = []
    start = time.monotonic()
    gauge = host_gauge() if any(n.startswith("molecule-") for n in selected or STAGES) else None
    if gauge is not None:
        print(gauge_line(gauge), flush=True)
    try:
        for name in selected or list(STAGES):
            if name.startswith("molecule-") and any(r[0] == "image" and r[1] != "passed" for r in results):
                results.append((name, "failed", 0.0))
                continue
            print(f"\n===== stage {name} =====", flush=True)
            t0 = time.monotonic()
            started.append(name)
            rc = STAGES[name]()
            results.append((name, "passed" if rc == 0 else "failed", time.monotonic() - t0))
    finally:
        cleanup(started)
    print("\n===== suite summary =====")
    for name, outcome, seconds in results:
        host = HOST_REPORTS.get(name)
        print(f"  {name:16} {outcome:7} {seconds:7.1f} s" + (f"  {host.verdict()}" if host else ""))
    print(f"  {'total':16} {'':7} {time.monotonic() - start:7.1f} s")
    if gauge is not None:
        print(f"  {gauge_line(gauge)}")
    passed = sum(1 for r in results if r[1] == "passed")
    failed = len(results) - passed
    print(f"suite: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
