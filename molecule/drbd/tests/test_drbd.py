"""DRBD on the live pair, under the failover controller: converged state (the
active node is the only Primary and has the filesystem mounted), a replication
link cut and a partition in stonith mode, each under a writer on the active node.
After each fault: exactly one Primary, no split brain, every write the writer saw
acknowledged is readable. The writer runs over SSH and streams each
acknowledgement to this process. (A power-off of the active node under a writer
is test_bluemind's failover check, shared with the san scenario.)"""
import json
import threading

import labtopo
import pairstate

NODES = labtopo.members("bluemind_ha")
DEVICE = "/dev/drbd0"
MOUNT = "/srv/bluemind-ha"  # controller_mountpoint
RESULTS = labtopo.LOGS


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


def readable(node: str) -> set[int]:
    return labtopo.records(node, f"{MOUNT}/writes")


def vip_holder() -> str:
    held = [n for n in NODES if labtopo.vm(n).run("ip -br addr show | grep -q '192.168.60.100/'").rc == 0]
    assert len(held) == 1, held
    return held[0]


def settled(active: str) -> bool:
    """The controller has the active node running BlueMind and the other passive."""
    mine = json.loads(labtopo.vm(active).check_output("bluemind-ha status --json"))
    peer = json.loads(labtopo.vm(other(active)).check_output("bluemind-ha status --json"))
    return (mine["role"], mine["bluemind"], peer["role"]) == ("active", "CORE_STATE_RUNNING", "passive")


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
    assert holder == vip_holder(), "the Primary is not the floating IP's holder"
    assert labtopo.vm(holder).run(f"mountpoint -q {MOUNT}").rc == 0
    assert labtopo.vm(other(holder)).run(f"mountpoint -q {MOUNT}").rc != 0
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


def test_a_replication_link_cut_keeps_the_primary_serving_and_the_secondary_passive():
    active = primary()
    passive = other(active)
    writer = labtopo.Writer(active, f"{MOUNT}/writes", start=last_write(active))
    labtopo.wait_for(lambda: len(writer.acked) > pairstate.PROGRESS, 60, "the writer to make progress")
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
    assert pairstate.assert_pair_invariants() == active


def test_in_a_partition_one_node_stays_primary_and_the_other_is_powered_off():
    # The active node is the VRRP master: that is what gives it the fencing race
    # (the passive node's fence call waits); the controller made it the Primary.
    active = vip_holder()
    passive = other(active)
    labtopo.wait_for(lambda: settled(active), 300, f"BlueMind to run on {active} only")
    assert primary() == active
    writer = labtopo.Writer(active, f"{MOUNT}/writes", start=last_write(active))
    labtopo.wait_for(lambda: len(writer.acked) > pairstate.PROGRESS, 60, "the writer to make progress")
    for segment in ("public", "replication"):
        labtopo.labctl("link", labtopo.lab_name(), passive, segment, "off")
    # The cut node's keepalived is in FAULT (its public link is down), so its
    # controller stays passive; a promotion attempt anyway (an operator, a bug)
    # must lose the fencing race.
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
    labtopo.wait_for(lambda: settled(active), 300, f"{passive} to rejoin as passive")
    assert pairstate.assert_pair_invariants() == active
