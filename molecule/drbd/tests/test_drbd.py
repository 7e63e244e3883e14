"""DRBD on the live pair, under the failover controller: converged state (the
active node is the only Primary and has the filesystem mounted), a replication
link cut and a partition in stonith mode, each under a writer on the active node.
After each fault: exactly one Primary, no split brain, every write the writer saw
acknowledged is readable. The writer runs over SSH and streams each
acknowledgement to this process. (A power-off of the active node under a writer
is test_bluemind's failover check, shared with the san scenario.)"""
import json
import re
import threading
import time

import labtopo
import pairstate

NODES = labtopo.members("bluemind_ha")
DEVICE = "/dev/drbd0"
MOUNT = "/srv/bluemind-ha"  # controller_mountpoint
RESULTS = labtopo.LOGS
DELAY = labtopo.inventory_vars("bluemind_ha")["fencing_passive_delay"]


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


def host_power(node: str) -> str:
    return labtopo.labctl("power", labtopo.lab_name(), node, "status")


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


def fence(node: str, action: str):
    return labtopo.vm(node).run(f"/usr/local/sbin/bluemind-ha-fence {action}")


def fence_log(node: str) -> str:
    return labtopo.vm(node).check_output("cat /var/log/bluemind-ha/fence.log 2>/dev/null || true")


def passive_waited(node: str, since: int) -> bool:
    """node's fence program logged, after line `since` of its log, that it is the
    passive side and waits before fencing (read live over the management link)."""
    return any(f"waiting {DELAY} s before fencing" in line for line in fence_log(node).splitlines()[since:])


def test_in_a_partition_one_node_stays_primary_and_the_other_is_powered_off():
    """A full partition of the two nodes under a writer on the Primary. The active
    node's DRBD fence-peer handler calls the fence program, which powers the other
    off at once; the cut node's own call (through a promotion attempt, as an
    operator or a bug would make it), when it starts before its power cut, decides
    to wait fencing_passive_delay and never acts (the wait itself:
    test_fencing.test_the_passive_node_waits_before_fencing). Then the fence program's other
    answers on the same pair: status off, a second off "already off" at once, on
    boots the loser again (a new virtual machine process: its links are back),
    which resyncs and rejoins as passive."""
    # The active node is the VRRP master: that is what gives it the fencing race
    # (the passive node's fence call waits); the controller made it the Primary.
    active = vip_holder()
    passive = other(active)
    labtopo.wait_for(lambda: settled(active), 300, f"BlueMind to run on {active} only")
    assert primary() == active
    # Active means VRRP master for longer than the takeover window (10 s).
    labtopo.wait_for(lambda: float(labtopo.vm(active).check_output("cut -d' ' -f2 /run/bluemind-ha/vrrp-state"))
                     < time.time() - 12, 30, f"{active} to be master for more than the takeover window")
    passive_boot = labtopo.boot_id(passive)
    logged = {n: len(fence_log(n).splitlines()) for n in NODES}
    writer = labtopo.Writer(active, f"{MOUNT}/writes", start=last_write(active))
    labtopo.wait_for(lambda: len(writer.acked) > pairstate.PROGRESS, 60, "the writer to make progress")
    for segment in ("public", "replication"):
        labtopo.labctl("link", labtopo.lab_name(), passive, segment, "off")
    # The cut node's keepalived is in FAULT (its public link is down), so its
    # controller stays passive; a promotion attempt anyway (an operator, a bug)
    # must lose the fencing race.
    attempt = threading.Thread(target=try_to_promote, args=(passive,), daemon=True)
    attempt.start()
    # The passive side's wait, read live: its log may not reach its disk before
    # the power cut.

    def waiting_or_off():
        try:
            if passive_waited(passive, logged[passive]):
                return "waiting"
        except (RuntimeError, AssertionError):  # SSH ends with the power cut
            pass
        return "off" if host_power(passive) == "Off" else None
    seen_waiting = labtopo.wait_for(waiting_or_off, 120,
                                    f"{passive} to wait before fencing, or to be powered off") == "waiting"
    labtopo.wait_for(lambda: host_power(passive) == "Off", 120, f"{passive} to be powered off by {active}")
    assert host_power(active) == "On"
    before = len(writer.acked)
    labtopo.wait_for(lambda: len(writer.acked) > before + 20, 60, "the Primary to resume writing")
    writer.stop(active)
    assert not writer.errors, writer.errors[:5]
    assert state(active)["role"] == "Primary"
    fenced = labtopo.vm(active).check_output("journalctl -b --no-pager -t bluemind-ha-drbd | grep fence-peer")
    assert f"{passive} is powered off" in fenced, fenced
    # The active node's own decision and call, from its fence log.
    active_log = fence_log(active).splitlines()[logged[active]:]
    decided = [line for line in active_log if "off: this node is" in line]
    assert decided and "this node is active" in decided[0] and "fencing" in decided[0], active_log
    done = [float(m.group(1)) for m in map(re.compile(r"off: done on .* in ([0-9.]+) s").search, active_log) if m]
    assert done and done[0] < DELAY, active_log
    # The fence program's other answers: status, a peer already off (no delay, no
    # agent), and on, which boots the loser through its controller.
    status = fence(active, "status")
    assert (status.rc, status.stdout.strip()) == (0, "off"), status.stderr
    start = time.monotonic()
    again = fence(active, "off")
    assert again.rc == 0 and "already off" in again.stderr, again.stderr
    assert time.monotonic() - start < 10
    result = fence(active, "on")
    assert result.rc == 0, result.stderr
    assert host_power(passive) == "On"
    labtopo.wait_booted(passive, passive_boot, 240)
    assert fence(active, "status").stdout.strip() == "on"
    labtopo.wait_for(in_sync, 300, "the fenced node to resync")
    assert primary() == active
    assert set(writer.acked) <= readable(active)
    no_split_brain()
    labtopo.wait_for(lambda: settled(active), 300, f"{passive} to rejoin as passive")
    # The passive side never powered its peer off; when it decided before its power
    # cut (read live above, or from its log on disk after the reboot), it decided
    # to wait. Its decision can come after the cut: it reads its peer's power
    # through the agent first, and the active side's whole call took about as long.
    passive_log = fence_log(passive).splitlines()[logged[passive]:]
    assert not [line for line in passive_log if "off: done on" in line], passive_log
    decisions = [line for line in passive_log if "off: this node is" in line]
    assert all("this node is passive" in line and f"waiting {DELAY} s before fencing" in line
               for line in decisions), passive_log
    if seen_waiting or decisions:
        passive_outcome = "waited (read live)" if seen_waiting else "waited (read after its reboot)"
    elif any("call: off of peer" in line for line in passive_log):
        passive_outcome = "powered off after its call, before deciding"
    else:
        passive_outcome = "powered off before its call was logged"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fencing-partition.json").write_text(json.dumps(
        {"active": active, "active_off_seconds": done[0], "passive_delay": DELAY,
         "passive": passive_outcome, "passive_log": passive_log}))
    assert pairstate.assert_pair_invariants() == active
