"""What a failed check leaves behind: the state of every lab VM at the moment it
failed, before the VMs are destroyed with their journals.

For each VM of the scenario, one SSH command (bounded) collects the failover
controller's status and the boot's journal of the last 20 minutes:
- the whole of it goes to LOGS/failures-<lab>/<check>/<vm>.log, kept after the run;
- the lines of the HA stack (the controller and its storage and fence agents,
  keepalived, the kernel, iscsid, multipathd), the last HA_LINES of them, go into
  the check's report, which pytest prints with the failure (and CI keeps).

The scenarios' conftest.py imports the hook."""
from __future__ import annotations

import importlib.util
import re
import subprocess

import pytest

import labtopo

# Journal lines of the HA stack, by syslog identifier (journalctl's short-precise
# form: "Nov 29 11:33:05.123456 node2 bluemind-ha[812]: ...").
HA_IDENTIFIERS = re.compile(
    r"^\S+ +\d+ [\d:.]+ \S+ (bluemind-ha[-a-z]*|Keepalived[_a-z]*|kernel|iscsid|multipathd)(\[\d+\])?: ")
HA_LINES = 60
COMMAND = ("echo '--- status'; bluemind-ha status 2>&1;"
           " echo '--- journal (this boot, last 20 min)'; journalctl -b --no-pager -o short-precise --since=-20min")
TIMEOUT = 90
# VMs that did not answer within TIMEOUT at an earlier failure of this run: not
# asked again, so that a hung VM under a cascade of failed checks costs TIMEOUT
# once, not once per check.
SILENT: set[str] = set()


def vm_state(name: str) -> str:
    """The VM's status and journal; what went wrong instead when it does not answer."""
    if name in SILENT:
        return f"(did not answer within {TIMEOUT} s at an earlier failure; not asked again)\n"
    try:
        proc = subprocess.run(labtopo.ssh_argv(name, COMMAND), capture_output=True, text=True, timeout=TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        SILENT.add(name)
        return f"(no answer within {TIMEOUT} s)\n"
    if proc.returncode == 255:
        return f"(unreachable: {proc.stderr.strip()[-200:]})\n"
    return proc.stdout


def ha_excerpt(text: str, limit: int = HA_LINES) -> str:
    """The status part, then the last `limit` journal lines of the HA stack."""
    head, _sep, journal = text.partition("--- journal")
    lines = [line for line in journal.splitlines() if HA_IDENTIFIERS.match(line)]
    return head + f"--- HA journal lines (last {limit} of {len(lines)})\n" + "\n".join(lines[-limit:]) + "\n"


def host_line() -> str:
    """The host's load and the labs sharing it at the failure (labctl's
    host_load): a failure on an oversubscribed host may be the host's."""
    try:
        spec = importlib.util.spec_from_file_location("labctl_for_failures", labtopo.LABCTL)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return f"host at the failure: {module.host_load()}\n"
    except (OSError, ImportError, AttributeError) as exc:
        return f"host at the failure: unknown ({exc})\n"


def safe_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]


def record(nodeid: str) -> str:
    """Keep every VM's state for the failed check nodeid; return the excerpt."""
    directory = labtopo.LOGS / f"failures-{labtopo.lab_name()}" / safe_name(nodeid)
    directory.mkdir(parents=True, exist_ok=True)
    parts = [host_line()]
    for platform in labtopo.platforms():
        name = platform["name"]
        text = vm_state(name)
        (directory / f"{name}.log").write_text(text, encoding="utf-8")
        parts.append(f"===== {name}\n{ha_excerpt(text)}")
    return "".join(parts) + f"(whole journals: {directory})\n"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        try:
            excerpt = record(item.nodeid)
        except (OSError, KeyError) as exc:
            excerpt = f"(the lab's state could not be kept: {exc})\n"
        report.sections.append((f"the lab at the failure ({call.when})", excerpt))
    return report
