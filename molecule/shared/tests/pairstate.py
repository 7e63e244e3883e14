"""The fault matrix's common instruments (both scenarios, and the operations
checks): a client of BlueMind writing through the floating IP, and the pair's
invariants, asserted on both nodes after every fault.

The invariants, from design.md's safety rules:
- exactly one node holds the floating IP;
- at most one node has the storage writable (DRBD: Primary; SAN: the filesystem
  mounted read-write with a working path to the LUN) and at most one has it
  mounted (SAN: with a working path);
- BlueMind runs only where the storage is mounted, and where the floating IP is;
- every write the client saw acknowledged is readable through the floating IP.
The first three are safety properties: they are asserted on every sample taken
while the pair settles, not only on the last one."""
from __future__ import annotations

import contextlib
import re
import time

import labtopo
import outages

NODES = labtopo.members("bluemind_ha")
VARS = labtopo.inventory_vars("bluemind_ha")
VIP = VARS["bluemind_ha_vip"].split("/")[0]
STORAGE = VARS["bluemind_ha_storage"]
MOUNT = "/srv/bluemind-ha"  # controller_mountpoint
# Acknowledged requests (or writes) that show a client or writer works before a
# fault is injected: a few suffice (10 and 20 until 2026-12-07 cost 5 to 8 s a
# check at about 3 requests a second under emulation, for nothing more proven).
PROGRESS = 3
DRBD_RESOURCE = VARS.get("drbd_resource", "bluemind")
SAN_MAP = "/dev/mapper/" + VARS.get("san_alias", "bluemind")
BLUEMIND_UNITS = "'bm-*' bluemind.target postgresql.service"

# The client's pause between two requests. Each request is a new TLS connection
# through the stand-in's proxy to its core, which writes the mail on the
# replicated storage: at 0.2 s (until 2026-12-07) the client, the active node and
# the DRBD peer took 0.8 of the host's 2 cores on top of the idle pair's 0.3
# (drbd lab, a 40 s sample per pause: 2.3 requests a second), at 0.5 s 0.3 (1.4
# requests a second), at 1 s 0.14: CPU that the boots, the takeovers and the
# ansible runs of the checks did not get. An outage is still measured to about
# 0.7 s, against bounds of 8 s and more.
CLIENT_PAUSE = 0.5
# Test instrument, run on a VM: PUTs numbered mail to BlueMind (the lab's
# stand-in) through the floating IP, a pause (argv[4]) after each attempt, one
# line per attempt.
CLIENT = r"""
import os, ssl, sys, time, urllib.request
vip, prefix, end, pause = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3]), float(sys.argv[4])
context = ssl._create_unverified_context()
seq = 0
while time.time() < end and not os.path.exists("/var/tmp/client.stop"):
    seq += 1
    t0 = time.time()
    request = urllib.request.Request("https://%s/api/test/mail/%s-%d" % (vip, prefix, seq),
                                     data=b"mail %d" % seq, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            ok = response.status == 201
            print("%s %d %.3f %d %.3f" % ("ack" if ok else "err", seq, t0, response.status, time.time()),
                  flush=True)
    except Exception as exc:
        print("err %d %.3f %s %.3f" % (seq, t0, type(exc).__name__, time.time()), flush=True)
    time.sleep(pause)
"""

# Test instrument, run on a VM: reads back, through the floating IP, the mail
# whose numbers come on stdin, in one request (the stand-in's bulk read; one
# request a mail took 0.1 s each under emulation, up to 25 s a check); prints the
# numbers not read back as written. Three attempts, a second apart: the numbers
# are all printed when none answered.
READER = r"""
import json, ssl, sys, time, urllib.request
vip, prefix = sys.argv[1], sys.argv[2]
context = ssl._create_unverified_context()
stored = None
for attempt in range(3):
    try:
        with urllib.request.urlopen("https://%s/api/test/mail?prefix=%s-" % (vip, prefix), timeout=30,
                                    context=context) as response:
            stored = json.loads(response.read().decode())
        if not isinstance(stored, dict):
            sys.exit("reader: the bulk read answered %s, not an object of mail: an old stand-in?" % type(stored).__name__)
        break
    except (OSError, ValueError) as exc:
        print("reader: %s" % exc, file=sys.stderr)
        time.sleep(1)
for seq in sys.stdin.read().split():
    if stored is None or stored.get("%s-%s" % (prefix, seq)) != "mail %s" % seq:
        print(seq)
"""


def client_host(active: str) -> str:
    """Where a client runs: a VM on the public segment outside the pair when the
    scenario has one (san: the array VM), else the given node of the pair (drbd),
    which the caller keeps up."""
    for platform in labtopo.platforms():
        if "bluemind_ha" not in platform.get("groups", []) and any(
                nic["segment"] == "public" for nic in platform.get("nics", [])):
            return platform["name"]
    return active


class Client(labtopo.Remote):
    """A client of BlueMind on one VM: acknowledgements and errors are recorded
    here, on the host, so they survive any fault of the guests."""

    def __init__(self, node: str, prefix: str, seconds: int = 900):
        labtopo.vm(node).check_output(f"rm -f /var/tmp/client.stop; cat > /var/tmp/client.py <<'EOF'\n{CLIENT}\nEOF")
        self.prefix = prefix
        self.acked: list[int] = []
        # (number, start, end) of each acknowledged request, the VM's clock (chrony, the host's time)
        self.acks: list[tuple[int, float, float]] = []
        self.errors: list[tuple[int, float, str]] = []
        super().__init__(node, f"python3 /var/tmp/client.py {VIP} {prefix} {seconds} {CLIENT_PAUSE}", "/var/tmp/client.stop")

    def line(self, fields: list[str]):
        if len(fields) == 5 and fields[0] == "ack":
            self.acks.append((int(fields[1]), float(fields[2]), float(fields[4])))
            self.acked.append(int(fields[1]))
        elif len(fields) == 5 and fields[0] == "err":
            self.errors.append((int(fields[1]), float(fields[2]), fields[3]))

    def stop(self):
        self.finish()

    def first_ack_after(self, moment: float) -> tuple[int, float, float] | None:
        """The first request started after moment and acknowledged."""
        return next((ack for ack in list(self.acks) if ack[1] > moment), None)

    def error_window(self) -> float:
        """Seconds from the first failed request's start to the last one's, plus
        the client's pause: 0 when every request was acknowledged."""
        if not self.errors:
            return 0.0
        return round(self.errors[-1][1] - self.errors[0][1] + 0.2, 1)

    def outages(self) -> list[float]:
        """The client's outages, in order: each a run of failed requests with no
        acknowledged request between them, in seconds (its first failed request's
        start to its last one's, plus the client's pause)."""
        return outages.outage_runs(self.errors, self.acked)

    def unreadable(self) -> list[int]:
        """The acknowledged mail not read back as written through the floating IP."""
        host = labtopo.vm(self.node)
        host.check_output(f"cat > /var/tmp/reader.py <<'EOF'\n{READER}\nEOF")
        numbers = " ".join(str(n) for n in self.acked)
        out = host.check_output(f"echo {numbers} | python3 /var/tmp/reader.py {VIP} {self.prefix}")
        return [int(n) for n in out.split()]


@contextlib.contextmanager
def client_during(active: str, fault: str, bound: float):
    """A client writing through the floating IP for the block (the fault and the
    pair's return to a settled state): then every write it saw acknowledged must
    read back, the safety invariants hold on every sample (assert_pair_invariants),
    and the seconds it could not write (the sum of its outages, each a run of failed
    requests with no acknowledged one between them) must be at most bound. Not the
    span from the first failure to the last: a clean reboot of the active node
    hands over (one outage), then the old node boots and rejoins; once its guest
    kernel locked up during that boot (the emulator, 2026-12-07), DRBD froze the
    Primary's writes until its ping timeout, a second outage of about 10 s two
    minutes after the first, and the span (148 s) counted the two minutes in
    between when every write was acknowledged. Yields the client; the block's end
    must come after the pair settled."""
    client = Client(client_host(active), f"{fault}-{int(time.time())}")
    labtopo.wait_for(lambda: len(client.acked) > PROGRESS, 60, "the client to make progress")
    try:
        yield client
    finally:
        client.stop()
    runs = client.outages()
    print(f"{fault}: client errors {len(client.errors)}, outages {runs} s (first to last error"
          f" {client.error_window()} s), acknowledged {len(client.acked)}")
    assert_pair_invariants(client)
    assert sum(runs) <= bound, (
        f"{fault}: the client could not write for {sum(runs):.1f} s ({runs}), over its bound {bound} s;"
        f" first errors {client.errors[:5]}")


def snapshot(node: str) -> dict:
    """One node's side of the invariants, in one SSH round trip."""
    out = labtopo.vm(node).check_output(
        f"v=$(ip -o addr show to {VIP} | wc -l);"
        f" m=$(findmnt -n -o OPTIONS --mountpoint {MOUNT} | cut -d, -f1);"
        f" r=$(drbdadm role {DRBD_RESOURCE} 2>/dev/null | cut -d/ -f1);"
        f" u=$(systemctl list-units --state=active --plain --no-legend {BLUEMIND_UNITS} | awk '{{printf \"%s \", $1}}');"
        f" p=$(cat /sys/block/$(basename $(readlink -f {SAN_MAP}))/slaves/*/device/state 2>/dev/null | grep -c running);"
        " echo \"$v|$m|$r|$u|$p\"")
    vip, mount, role, units, paths = out.strip().split("|")
    # SAN: a mount left on a node without a working path cannot write (its I/O
    # fails, and the peer's claim preempted its reservation): it is not a second
    # writer while that node's deactivation unmounts it.
    reaches = STORAGE != "san" or int(paths or 0) > 0
    return {"vip": int(vip) > 0, "mounted": bool(mount) and reaches,
            "writable": role == "Primary" or (mount == "rw" and reaches), "units": units.split(),
            "stale_mount": bool(mount) and not reaches}


def safety_violations(states: dict[str, dict]) -> list[str]:
    """What no sample of the pair may show, at any moment."""
    problems = []
    for key, what in (("vip", "hold the floating IP"), ("writable", "have the storage writable"),
                      ("mounted", "have the storage mounted")):
        nodes = [n for n, s in states.items() if s[key]]
        if len(nodes) > 1:
            problems.append(f"{' and '.join(nodes)} both {what}")
    problems += [f"{n} runs {s['units']} without the storage" for n, s in states.items()
                 if s["units"] and not s["mounted"] and not s["stale_mount"]]
    return problems


def whole(states: dict[str, dict]) -> bool:
    """The service settled on one node: the floating IP, the storage and bm-core
    there, nothing of BlueMind on the other."""
    holders = [n for n, s in states.items() if s["vip"]]
    if len(holders) != 1:
        return False
    active = states[holders[0]]
    others = [s for n, s in states.items() if n != holders[0]]
    return active["mounted"] and "bm-core.service" in active["units"] and all(
        not s["units"] and not s["mounted"] and not s["stale_mount"] for s in others)


def assert_pair_invariants(client: Client | None = None, timeout: float = 300,
                           nodes: list[str] | None = None) -> str:
    """Sample both nodes (or the given ones: a node that is off has nothing
    running) until the service is whole, at most timeout seconds, asserting the
    safety properties on every sample; then, given a client, every write it saw
    acknowledged is read back through the floating IP. Returns the active node."""
    nodes = nodes or NODES
    start = time.monotonic()
    deadline = start + timeout
    while True:
        states = {n: snapshot(n) for n in nodes}
        problems = safety_violations(states)
        assert not problems, f"invariant broken: {problems}; states: {states}"
        if whole(states):
            break
        assert time.monotonic() < deadline, f"the pair did not settle within {timeout:.0f} s: {states}"
        time.sleep(1)
    active = next(n for n, s in states.items() if s["vip"])
    labtopo.trace(f"the pair settled on {active} after {time.monotonic() - start:.1f} s")
    if client is not None:
        start = time.monotonic()
        lost = client.unreadable()
        labtopo.trace(f"read back {len(client.acked)} acknowledged writes in {time.monotonic() - start:.1f} s")
        assert not lost, f"acknowledged writes not readable through the floating IP: {lost[:10]}"
    return active


def ready_to_take_over(node: str) -> bool:
    """node could take over now: its health check passes (DRBD UpToDate, the SAN
    map present) and keepalived has left FAULT for BACKUP. The health check alone
    is not enough after a boot: keepalived leaves FAULT after `rise` passing
    checks (2 x 4 s in the lab, more when a check is slow), and a peer powered
    off before that finds this node unable to take the floating IP yet."""
    out = labtopo.vm(node).run("bluemind-ha health >/dev/null && cut -d' ' -f1 /run/bluemind-ha/vrrp-state")
    return out.rc == 0 and out.stdout.strip() == "BACKUP"


def describe(node: str) -> str:
    """What a failed check needs to know of a node: the controller's status, the
    last lines of keepalived's and the controller's journals."""
    return labtopo.vm(node).run(
        "bluemind-ha status 2>&1 | head -8; echo '--- keepalived'; journalctl -b --no-pager -u keepalived -n 12 -o short-precise;"
        " echo '--- controller'; journalctl -b --no-pager -t bluemind-ha -n 12 -o short-precise").stdout


@contextlib.contextmanager
def explained(node: str):
    """A failed assertion in the block carries node's state (describe)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {node}:\n{describe(node)}") from exc


def fenced_since(survivor: str, node: str, since: str) -> bool:
    """survivor's fence agent logged, at or after since (the survivor's
    %Y-%m-%dT%H:%M:%S), node powered off (or found off)."""
    log = labtopo.vm(survivor).run("cat /var/log/bluemind-ha/fence.log").stdout
    # "off: done on node2 (controller ...) in 8.4 s", "off: node2 (controller ...) is already off"
    done = re.compile(rf"off: (done on {re.escape(node)} |{re.escape(node)} .*is already off)")
    return any(line[:19] >= since and done.search(line) for line in log.splitlines())
