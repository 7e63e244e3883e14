"""Helpers for the scenarios' testinfra checks: the topology of molecule.yml and
a testinfra host for any VM of the scenario, so a check can name its hosts."""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import testinfra
import yaml

# Where the checks keep their measurements (failover JSON, waits), after the run.
LOGS = Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab")) / "logs"
# Whether this process has written its waits log yet (the first trace truncates it).
_TRACE = {"started": False}


def scenario_dir() -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


@functools.cache
def molecule_config() -> dict:
    return yaml.safe_load((scenario_dir() / "molecule.yml").read_text())


def platforms() -> list[dict]:
    return molecule_config()["platforms"]


def inventory_vars(group: str) -> dict:
    return molecule_config()["provisioner"]["inventory"]["group_vars"].get(group, {})


def host_vars(name: str) -> dict:
    return (molecule_config()["provisioner"]["inventory"].get("host_vars") or {}).get(name, {})


def members(group: str) -> list[str]:
    return [p["name"] for p in platforms() if group in p.get("groups", [])]


@functools.cache
def instances() -> dict[str, dict]:
    """Molecule's instance config (written by create.yml): name -> SSH coordinates."""
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "instance_config.yml"
    return {i["instance"]: i for i in yaml.safe_load(path.read_text())}


def control_dir() -> Path:
    """The directory of the checks' SSH master sockets: one per user, owner-only,
    short enough for a socket path (108 bytes)."""
    path = Path(f"/tmp/bmha-ssh-{os.getuid()}")
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
        raise RuntimeError(f"{path} must belong to uid {os.getuid()} with mode 0700; remove it and rerun")
    return path


@functools.cache
def vm(name: str):
    """A testinfra host for one VM of the scenario, over plain SSH.

    testinfra sets no ControlPath, so without one every command is a new login:
    2.1-2.3 s under software emulation, against 0.3-0.4 s for a command on an open
    master connection. The master stays 60 s after its last use; it dies with the
    VM's TCP connection when the VM powers off or reboots, and the next command
    opens a new one."""
    inst = instances()[name]
    return testinfra.get_host(
        f"ssh://{inst['user']}@{inst['address']}:{inst['port']}",
        ssh_identity_file=inst["identity_file"],
        # Options given here come before testinfra's own, so they win: under software
        # emulation a busy guest can take more than testinfra's 10 s to greet.
        ssh_extra_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
                       " -o ConnectTimeout=30 -o ConnectionAttempts=3 -o ServerAliveInterval=15"
                       f" -o ControlMaster=auto -o ControlPersist=60s -o ControlPath={control_dir()}/%C",
    )


def segment_peers() -> list[tuple[str, str, str, str]]:
    """(source VM, peer VM, segment, peer address) for every pair sharing a segment."""
    pairs = []
    for src in platforms():
        mine = {n["segment"]: n for n in src.get("nics", [])}
        for dst in platforms():
            if dst["name"] == src["name"]:
                continue
            for net in dst.get("nics", []):
                if net["segment"] not in mine:
                    continue
                for key in ("address", "address6"):
                    if net.get(key) and mine[net["segment"]].get(key):
                        pairs.append((src["name"], dst["name"], net["segment"], net[key].split("/")[0]))
    return pairs


LABCTL = Path(__file__).resolve().parents[3] / "tests" / "lab" / "labctl.py"


def lab_name() -> str:
    """The scenario's lab; LAB_NAME points the checks at another lab of the same
    topology (a developer's, brought up with `labctl.py up --spec`)."""
    return os.environ.get("LAB_NAME") or f"molecule-{os.environ['MOLECULE_SCENARIO_NAME']}"


def labctl(*args: str) -> str:
    """Run the lab tool on this scenario's lab (faults, power) and return its output."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(LABCTL), *args], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, f"labctl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout.strip()


@contextlib.contextmanager
def powered_off(node: str):
    """node's plug pulled for the block, which powers it on again when its fault
    is over. A block that fails before that leaves it on again (waited for) all
    the same: the checks after a failed one find both nodes, one failure is
    reported instead of a cascade of unreachable hosts."""
    labctl("power", lab_name(), node, "off")
    try:
        yield
    except BaseException:
        with contextlib.suppress(AssertionError):
            labctl("power", lab_name(), node, "on", "--wait")
        vm.cache_clear()
        raise


@contextlib.contextmanager
def cpu_saturated(node: str, per_vcpu: int = 2, seconds: float = 900):
    """node's CPU saturated for the block: per_vcpu busy loops per vCPU at the
    normal nice value (as BlueMind's JVMs and a mail queue compete with the HA
    stack), in a transient unit (lab-cpu-load) that ends by itself after seconds
    (15 minutes by default) whatever happens to the check; its Result is then
    "timeout". Test infrastructure (the CPU load stress-ng's cpu workers give,
    without installing it)."""
    host = vm(node)
    workers = int(host.check_output("nproc")) * per_vcpu
    host.check_output(
        "systemctl stop lab-cpu-load 2>/dev/null; systemctl reset-failed lab-cpu-load 2>/dev/null; "
        f"systemd-run --quiet --unit=lab-cpu-load --property=RuntimeMaxSec={seconds:.0f} --property=KillMode=control-group "
        f"sh -c 'for i in $(seq {workers}); do (while :; do :; done) & done; wait'")
    trace(f"{node}: CPU saturated ({workers} busy loops)")
    try:
        yield workers
    finally:
        with contextlib.suppress(Exception):
            host.run("systemctl stop lab-cpu-load")
        trace(f"{node}: CPU load stopped")


def trace(message: str) -> None:
    """Where a check's seconds go: printed (pytest shows it with -s or on a
    failure) and written to LOGS/waits-<lab>.log with the check's name, kept
    after the run. The first trace of a process (a pytest run, a benchmark)
    starts the file afresh."""
    import time

    line = f"{time.strftime('%H:%M:%S')} {os.environ.get('PYTEST_CURRENT_TEST', '-').split(' ')[0]} {message}"
    print(line)
    with contextlib.suppress(OSError):
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(LOGS / f"waits-{lab_name()}.log", "a" if _TRACE["started"] else "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
    _TRACE["started"] = True


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll predicate() until it returns a true value, at most timeout seconds."""
    import time

    start = time.monotonic()
    deadline = start + timeout
    while True:
        value = predicate()
        if value:
            trace(f"waited {time.monotonic() - start:.1f} s for {what}")
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def boot_id(name: str) -> str:
    return vm(name).check_output("cat /proc/sys/kernel/random/boot_id")


def wait_booted(name: str, old_boot: str, timeout: float) -> None:
    """Until name answers on SSH with a boot id other than old_boot: it booted
    again (a reboot, or a power cycle). SSH failures meanwhile are not errors."""
    vm.cache_clear()

    def booted():
        try:
            return boot_id(name) != old_boot
        except (RuntimeError, AssertionError):  # testinfra raises on SSH's own failures
            return False
    wait_for(booted, timeout, f"{name} to boot again", interval=2)


def write_inventory(path: Path) -> Path:
    """An Ansible inventory of the scenario's VMs with molecule.yml's inventory
    variables: what a user's inventory would say about the same pair."""
    provisioned = molecule_config()["provisioner"].get("inventory") or {}
    hosts = {}
    for name, inst in instances().items():
        hosts[name] = {"ansible_host": inst["address"], "ansible_port": int(inst["port"]),
                       "ansible_user": inst["user"], "ansible_ssh_private_key_file": inst["identity_file"],
                       **(provisioned.get("host_vars") or {}).get(name, {})}
    groups = {}
    for platform in platforms():
        for group in platform.get("groups", []):
            groups.setdefault(group, {"hosts": {}, "vars": (provisioned.get("group_vars") or {}).get(group, {})})
            groups[group]["hosts"][platform["name"]] = {}
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts, "children": groups}}))
    return path


def run_playbook(playbook: str, inventory: Path, extra_vars: dict | None = None,
                 timeout: float = 900) -> dict:
    """Run a playbook of the collection (by FQCN) on the scenario's VMs and return
    the json callback's report, with its exit code under "rc"."""
    import json
    import subprocess
    import sys

    plugins = Path(__file__).resolve().parents[1] / "callback_plugins"
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="lab_report", ANSIBLE_CALLBACK_PLUGINS=str(plugins),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), playbook]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    start = proc.stdout.find("{")
    assert start >= 0, f"{playbook} printed no report (rc {proc.returncode}): {proc.stdout}{proc.stderr}"
    report = json.loads(proc.stdout[start:])
    report["rc"] = proc.returncode
    report["stderr"] = proc.stderr
    return report


def task_results(report: dict):
    """(task name, host, result) for every task result of a json callback report."""
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                yield task["task"]["name"], host, result


# Test instrument, run on a node: fsyncs numbered records into a file and prints
# an acknowledgement for each (or the errno of a failed write).
WRITER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
seq, end = int(sys.argv[2]), time.time() + float(sys.argv[3])
while time.time() < end and not os.path.exists("/var/tmp/writer.stop"):
    seq += 1
    try:
        os.write(fd, b"%08d\n" % seq)
        os.fsync(fd)
        print("ack %d %.3f" % (seq, time.time()), flush=True)
    except OSError as exc:
        print("err %d %.3f %d" % (seq, time.time(), exc.errno), flush=True)
    time.sleep(0.05)
"""


def ssh_argv(node: str, command: str) -> list[str]:
    """An ssh command line that runs command on node, for a process whose output
    is read while it runs (testinfra's run() returns only at the end)."""
    inst = instances()[node]
    return ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-i", inst["identity_file"], "-p", str(inst["port"]), f"{inst['user']}@{inst['address']}", command]


class Remote:
    """A program on a VM whose output lines are read here, on the host, while it
    runs (each goes to line(fields)); it ends by itself, or when stop_file exists
    on the VM."""

    def __init__(self, node: str, command: str, stop_file: str):
        import subprocess
        import threading

        self.node, self.stop_file = node, stop_file
        self.proc = subprocess.Popen(ssh_argv(node, command), stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for text in self.proc.stdout:
            self.line(text.split())

    def line(self, fields: list[str]):
        raise NotImplementedError

    def finish(self, ask: bool = True):
        """Ask the program to stop (unless its VM is gone) and wait for its end."""
        import subprocess

        if ask:
            vm(self.node).run(f"touch {self.stop_file}")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.thread.join(timeout=10)


class Writer(Remote):
    """Writes numbered records into a file on a node over SSH; each acknowledgement
    is recorded here, on the host, so it survives the power-off of that node."""

    def __init__(self, node: str, path: str, start: int = 0, seconds: int = 240):
        vm(node).check_output(f"rm -f /var/tmp/writer.stop; cat > /var/tmp/writer.py <<'EOF'\n{WRITER}\nEOF")
        self.acked: list[int] = []
        self.errors: list[str] = []
        super().__init__(node, f"python3 /var/tmp/writer.py {path} {start} {seconds}", "/var/tmp/writer.stop")

    def line(self, fields: list[str]):
        if fields and fields[0] == "ack":
            self.acked.append(int(fields[1]))
        elif fields and fields[0] == "err":
            self.errors.append(" ".join(fields))

    def stop(self, node: str | None = None):
        """Stop the writer; node (its VM) when it is still up to be asked."""
        self.finish(ask=bool(node))


def records(node: str, path: str) -> set[int]:
    """The writer's records in path on node; none when there is no file yet (a file
    that should be there and is not then shows every acknowledged write missing)."""
    out = vm(node).run(f"cat {path}")
    assert out.rc == 0 or "No such file" in out.stderr, out.stderr
    return {int(s) for s in out.stdout.split()}


def wait_vip(node: str, vip: str, timeout: float = 30) -> float:
    """Poll on the node itself until it holds the floating IP; its clock (chrony,
    synchronised with the host) at that moment."""
    out = vm(node).run(
        f"end=$(( $(date +%s) + {int(timeout)} )); while [ $(date +%s) -lt $end ]; do"
        f" if ip -o addr show to {vip} | grep -q .; then date +%s.%N; exit 0; fi; sleep 0.05; done; exit 1")
    assert out.rc == 0, f"{node} did not take the floating IP within {timeout} s"
    return float(out.stdout.strip())
