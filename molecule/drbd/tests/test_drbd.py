"""DRBD on the live pair: converged state, a
power-off of the Primary under a writer, a replication link cut, a partition in
stonith mode. After each fault: exactly one Primary, no split brain, every write
the writer saw acknowledged is readable. The writer runs over SSH and streams
each acknowledgement to this process, so acknowledgements survive the power-off
of the node that made them."""
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import labtopo

NODES = labtopo.members("bluemind_ha")
DEVICE = "/dev/drbd0"
MOUNT = "/mnt/bluemind-test"
RESULTS = Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab")) / "logs"
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


def state(node: str) -> dict:
    return json.loads(labtopo.vm(node).check_output("bluemind-ha-drbd status --json"))


def primary() -> str:
    roles = {n: state(n).get("role") for n in NODES}
    primaries = [n for n, r in roles.items() if r == "Primary"]
    assert len(primaries) == 1, f"expected exactly one Primary: {roles}"
    return primaries[0]


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def in_sync() -> bool:
    states = [state(n) for n in NODES]
    return all(s.get("connection") == "Connected" and s.get("disk") == "UpToDate"
               and s.get("peer_disk") == "UpToDate" for s in states)


def no_split_brain():
    for node in NODES:
        log = labtopo.vm(node).check_output("journalctl -k -b --no-pager | grep -i 'split-brain' || true")
        assert "Split-Brain detected" not in log, f"{node}: {log}"


class Writer:
    """fsyncs numbered records into the mounted DRBD filesystem of a node; each
    acknowledgement is recorded here, on the host."""

    def __init__(self, node: str, start: int = 0, seconds: int = 240):
        inst = labtopo.instances()[node]
        labtopo.vm(node).check_output(f"rm -f /var/tmp/writer.stop; cat > /var/tmp/writer.py <<'EOF'\n{WRITER}\nEOF")
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.proc = subprocess.Popen(
            ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             "-i", inst["identity_file"], "-p", str(inst["port"]), f"{inst['user']}@{inst['address']}",
             f"python3 /var/tmp/writer.py {MOUNT}/writes {start} {seconds}"],
            stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            fields = line.split()
            if fields and fields[0] == "ack":
                self.acked.append(int(fields[1]))
            elif fields and fields[0] == "err":
                self.errors.append(line.strip())

    def stop(self, node: str | None = None):
        if node:
            labtopo.vm(node).run("touch /var/tmp/writer.stop")
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.thread.join(timeout=10)


def readable(node: str) -> set[int]:
    """The records in the writer's file; none when there is no file yet (a file
    that should be there and is not then shows every acknowledged write missing)."""
    out = labtopo.vm(node).run(f"cat {MOUNT}/writes")
    assert out.rc == 0 or "No such file" in out.stderr, out.stderr
    return {int(s) for s in out.stdout.split()}


def take_over(node: str) -> float:
    """What the failover controller will do: promote, mount. Seconds taken."""
    start = time.monotonic()
    labtopo.vm(node).check_output("bluemind-ha-drbd promote")
    labtopo.vm(node).check_output(f"mkdir -p {MOUNT} && mount {DEVICE} {MOUNT}")
    return time.monotonic() - start


def mount(node: str):
    labtopo.vm(node).check_output(f"mkdir -p {MOUNT} && (mountpoint -q {MOUNT} || mount {DEVICE} {MOUNT})")


def try_to_promote(node: str):
    try:
        labtopo.vm(node).run("bluemind-ha-drbd promote")
    except RuntimeError:
        pass  # the SSH session ends when the node is powered off


def last_write(node: str) -> int:
    return max(readable(node), default=0)


def test_converged_pair_is_in_sync_with_one_primary_holding_the_filesystem():
    assert in_sync()
    holder = primary()
    probe = labtopo.vm(holder).check_output(f"blkid -p -o export {DEVICE}")
    assert "TYPE=ext4" in probe and "LABEL=bluemind_ha" in probe
    for node in NODES:
        host = labtopo.vm(node)
        for path in ("/etc/drbd.d/bluemind.res", "/etc/bluemind-ha/drbd.json"):
            f = host.file(path)
            assert (f.user, f.mode) == ("root", 0o600), f"{node}: {path}"
        assert host.service("bluemind-ha-drbd-outdater").is_running
        assert host.service("bluemind-ha-drbd-up").is_enabled
        assert "drbd" not in host.file("/etc/fstab").content_string
    # The initial sync's throughput, from the kernel's own report.
    done = labtopo.vm(holder).check_output("journalctl -k --no-pager | grep 'Resync done' | tail -1 || true")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drbd-initial-sync.json").write_text(json.dumps({"kernel": done}))


def test_power_off_of_the_primary_loses_no_acknowledged_write():
    old = primary()
    new = other(old)
    mount(old)
    writer = Writer(old, start=last_write(old))
    labtopo.wait_for(lambda: len(writer.acked) > 40, 60, "the writer to make progress")
    labtopo.labctl("power", labtopo.lab_name(), old, "off")
    writer.stop()
    took = take_over(new)
    missing = set(writer.acked) - readable(new)
    assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drbd-promote-and-mount.json").write_text(json.dumps({"seconds": round(took, 2)}))
    labtopo.labctl("power", labtopo.lab_name(), old, "on", "--wait")
    labtopo.vm.cache_clear()
    labtopo.wait_for(in_sync, 300, "the old Primary to return as Secondary and resync")
    assert primary() == new
    no_split_brain()


def test_a_replication_link_cut_keeps_the_primary_serving_and_the_secondary_passive():
    active = primary()
    passive = other(active)
    mount(active)
    writer = Writer(active, start=last_write(active))
    labtopo.wait_for(lambda: len(writer.acked) > 20, 60, "the writer to make progress")
    labtopo.labctl("link", labtopo.lab_name(), passive, "replication", "off")
    try:
        labtopo.wait_for(lambda: state(passive).get("disk") == "Outdated", 60, f"{passive} to be outdated")
        before = len(writer.acked)
        labtopo.wait_for(lambda: len(writer.acked) > before + 40, 60, "the Primary to keep writing")
        refused = labtopo.vm(passive).run("bluemind-ha-drbd promote")
        assert refused.rc == 3, refused.stderr
    finally:
        labtopo.labctl("link", labtopo.lab_name(), passive, "replication", "on")
    labtopo.wait_for(in_sync, 300, "the resync after the link returned")
    writer.stop(active)
    assert not writer.errors, writer.errors[:5]
    assert primary() == active
    no_split_brain()


def test_in_a_partition_one_node_stays_primary_and_the_other_is_powered_off():
    # The active node is the VRRP master: that is what gives it the fencing race
    # (the passive node's fence call waits). The failover controller keeps the
    # floating IP and the DRBD Primary together; until it exists, the test does.
    vip_holder = [n for n in NODES
                  if labtopo.vm(n).run("ip -br addr show | grep -q '192.168.60.100/'").rc == 0]
    assert len(vip_holder) == 1, vip_holder
    active, passive = vip_holder[0], other(vip_holder[0])
    if state(passive)["role"] == "Primary":
        labtopo.vm(passive).check_output(f"(! mountpoint -q {MOUNT} || umount {MOUNT}) && bluemind-ha-drbd demote")
    labtopo.vm(active).check_output("bluemind-ha-drbd promote")
    assert primary() == active
    mount(active)
    writer = Writer(active, start=last_write(active))
    labtopo.wait_for(lambda: len(writer.acked) > 20, 60, "the writer to make progress")
    for segment in ("public", "replication"):
        labtopo.labctl("link", labtopo.lab_name(), passive, segment, "off")
    # The passive side's controller (issue 8) would try to take over: do what it does.
    attempt = threading.Thread(target=try_to_promote, args=(passive,), daemon=True)
    attempt.start()
    labtopo.wait_for(lambda: labtopo.labctl("power", labtopo.lab_name(), passive, "status") == "Off", 120,
                     f"{passive} to be powered off by {active}")
    before = len(writer.acked)
    labtopo.wait_for(lambda: len(writer.acked) > before + 20, 60, "the Primary to resume writing")
    writer.stop(active)
    assert not writer.errors, writer.errors[:5]
    assert state(active)["role"] == "Primary"
    fenced = labtopo.vm(active).check_output("journalctl -b --no-pager -t bluemind-ha-drbd | grep fence-peer")
    assert f"{passive} is powered off" in fenced, fenced
    # Powered on again, the node has its links back (a new virtual machine process).
    labtopo.labctl("power", labtopo.lab_name(), passive, "on", "--wait")
    labtopo.vm.cache_clear()
    labtopo.wait_for(in_sync, 300, "the fenced node to resync")
    assert primary() == active
    assert set(writer.acked) <= readable(active)
    no_split_brain()
    # Until the failover controller exists, the later checks power nodes off
    # and on: with no Primary, DRBD does not fence the node they power off.
    labtopo.vm(active).check_output(f"umount {MOUNT} && bluemind-ha-drbd demote")
