"""The san role on the lab's array (LIO, two portals, CHAP): after converge each
node has one multipath map with a path per fabric, the active node holds the LUN
with the filesystem mounted and the passive node is registered. Then the pair is
parked (keepalived stopped on both nodes: each controller deactivates, nobody
holds the LUN) and the LUN command is put through what the failover controller
asks of it: claim, takeover by preemption (the old holder can no longer write),
safe mode on a foreign signature, a fabric link cut under a running writer.
Before the parking, both paths of the active node are cut under a client (the
service moves to the peer after multipath's queueing grace), then, on the other
node, with multipathd held back until the node has left FAULT (the key is
registered again by the release's retry).
These checks run after test_bluemind (file order) and leave BlueMind parked."""
import json
import statistics
import time
from pathlib import Path

import pytest

import labtopo
import pairstate

NODES = labtopo.members("bluemind_ha")
VARS = labtopo.inventory_vars("bluemind_ha")
PORTALS = VARS["bluemind_ha_san_portals"]
WWID = VARS["bluemind_ha_san_wwid"]
DEVICE = "/dev/mapper/bluemind"
MOUNT = "/mnt/bluemind-test"
RESULTS = labtopo.LOGS
WRITER = r"""
import os, sys, time
path, stop, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
log = open("/var/tmp/writer.log", "w", buffering=1)
seq, end = 0, time.time() + limit
while not os.path.exists(stop) and time.time() < end:
    seq += 1
    t0 = time.time()
    try:
        os.write(fd, b"%08d\n" % seq)
        os.fsync(fd)
        log.write("%.3f %.3f %d ok\n" % (t0, time.time(), seq))
    except OSError as exc:
        log.write("%.3f %.3f %d err %d\n" % (t0, time.time(), seq, exc.errno))
    time.sleep(0.05)
"""


def san(node: str, command: str, check: bool = True):
    result = labtopo.vm(node).run(f"bluemind-ha-san {command}")
    if check:
        assert result.rc == 0, f"{node}: bluemind-ha-san {command}: exit {result.rc}: {result.stderr}"
    return result


def status(node: str) -> dict:
    return json.loads(san(node, "status --json").stdout)


def vip_holders() -> list[str]:
    vip = VARS["bluemind_ha_vip"].split("/")[0]
    return [n for n in NODES if labtopo.vm(n).run(f"ip -o addr show to {vip}").stdout.strip()]


def vip_holder() -> str:
    held = vip_holders()
    assert len(held) == 1, held
    return held[0]


def controller(node: str) -> dict:
    return json.loads(labtopo.vm(node).check_output("bluemind-ha status --json"))


@pytest.fixture(scope="module")
def parked():
    """keepalived stopped (and kept off across the reboot of the last check) on
    both nodes: each controller deactivates (stops BlueMind, unmounts, releases
    the LUN). The later checks own the LUN."""
    for node in NODES:
        labtopo.vm(node).check_output("systemctl disable --now keepalived")
    for node in NODES:
        labtopo.wait_for(lambda n=node: controller(n)["role"] == "passive" and not status(n)["mounted_here"],
                         300, f"{node}'s controller to deactivate")
    labtopo.wait_for(lambda: status(NODES[0])["holder"] is None, 60, "the LUN to be released")
    yield


def test_the_active_node_holds_the_lun_with_the_filesystem_mounted():
    active = vip_holder()
    passive = next(n for n in NODES if n != active)
    mine, theirs = status(active), status(passive)
    assert mine["held_here"] and mine["mounted_here"], mine
    assert not theirs["held_here"] and not theirs["mounted_here"], theirs
    assert mine["registered"] == sorted(NODES), mine
    assert controller(active)["mounted"] and not controller(passive)["mounted"]


@pytest.mark.parametrize("node", NODES)
def test_one_map_with_an_active_path_per_fabric(node):
    info = status(node)
    assert info["present"], info
    assert info["active_paths"] == len(PORTALS) == 2, info["paths"]
    host = labtopo.vm(node)
    maps = host.check_output("multipathd show maps raw format '%n %w'").splitlines()
    assert maps == [f"bluemind {WWID}"], f"{node}: multipath should hold the LUN only: {maps}"
    # Local disks stay out of multipath.
    assert "vda" not in host.check_output("multipathd show paths raw format '%d'")


@pytest.mark.parametrize("node", NODES)
def test_iscsi_sessions_are_tuned_automatic_and_use_chap(node):
    host = labtopo.vm(node)
    sessions = host.check_output("iscsiadm -m session")
    for portal in PORTALS:
        assert f"{portal}:3260" in sessions, f"{node} has no session through {portal}"
        record = host.check_output(f"iscsiadm -m node -T iqn.2026-11.test.lab:bluemind -p {portal}")
        assert "node.startup = automatic" in record
        assert "node.session.timeo.replacement_timeout = 5" in record
        assert "node.session.auth.authmethod = CHAP" in record
    for path in host.check_output("ls /sys/class/iscsi_session").split():
        assert host.file(f"/sys/class/iscsi_session/{path}/recovery_tmo").content_string.strip() == "5"
    assert host.service("open-iscsi").is_enabled and host.service("bluemind-ha-san-register").is_enabled
    conf = host.file("/etc/bluemind-ha/san.json")
    assert (conf.user, conf.mode) == ("root", 0o600)
    # The CHAP secret is only in root-only places.
    for path in host.check_output("grep -rl lab-chap-secret1 /etc /var/log /run 2>/dev/null || true").split():
        assert host.file(path).mode & 0o077 == 0, f"{node}: {path} holds the CHAP secret and is not root-only"


def test_losing_every_path_of_the_active_node_moves_the_service_after_the_queueing_grace():
    """Both fabric links of the active node cut under a client writing through the
    floating IP (from the array VM): multipath queues the node's I/O for the grace
    (no_path_retry x polling_interval: a short SAN outage passes unnoticed), then
    the node's health check fails and the peer, which still sees the LUN, takes
    over by preempting the reservation. Neither earlier nor never."""
    active = pairstate.assert_pair_invariants()
    peer = next(n for n in NODES if n != active)
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(peer), 300, f"{peer} to be ready to take over")
    conf = json.loads(labtopo.vm(active).check_output("cat /etc/bluemind-ha/controller.json"))
    grace, interval = conf["storage_grace"], int(VARS["keepalived_check_interval"])
    client = pairstate.Client(pairstate.client_host(active), f"pathless-{int(time.time())}")
    labtopo.wait_for(lambda: len(client.acked) > pairstate.PROGRESS, 60, "the client to make progress")
    cut = time.time()
    for fabric in ("fabric_a", "fabric_b"):
        labtopo.labctl("link", labtopo.lab_name(), active, fabric, "off")
    try:
        # The check fails at the first run after the grace, keepalived after `fall`
        # (2) failed runs, the peer after VRRP's master-down interval (about 4 s).
        bound = grace + 3 * interval + 15
        with pairstate.explained(active):
            labtopo.wait_for(lambda: vip_holders() == [peer], bound, f"{peer} to take the floating IP")
        moved = time.time() - cut
        with pairstate.explained(peer):
            assert pairstate.assert_pair_invariants(client) == peer
    finally:
        for fabric in ("fabric_a", "fabric_b"):
            labtopo.labctl("link", labtopo.lab_name(), active, fabric, "on")
    client.stop()
    # Back to the nominal state by itself: with a path again, the node's health
    # check passes, keepalived leaves FAULT for BACKUP, and the key the peer's
    # preemption removed is registered again: by the deactivation that BACKUP
    # starts, or, when multipathd has not reinstated a path by then, by the retry
    # timer (its first release, without a path, had failed; the next check forces
    # that order). No operator step, no reboot.
    with pairstate.explained(active):
        labtopo.wait_for(lambda: pairstate.ready_to_take_over(active), 300, f"{active} to be ready to take over again")
        labtopo.wait_for(lambda: status(active)["registered"] == sorted(NODES), 120,
                         f"{active} to register its key again")
    first = client.first_ack_after(cut)
    result = {"grace": grace, "vip_moved_seconds": round(moved, 1), "client_errors": len(client.errors),
              "client_error_window_seconds": client.error_window(),
              "first_ack_after_cut_seconds": round(first[2] - cut, 1) if first else None,
              "acknowledged": len(client.acked)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "san-all-paths-lost.json").write_text(json.dumps(result, indent=2))
    print(f"every path of {active} lost: {result}")
    assert moved >= grace, f"the service moved {moved:.1f} s after the cut, within multipath's grace of {grace} s"
    assert status(active)["registered"] == sorted(NODES), status(active)
    assert pairstate.assert_pair_invariants() == peer


def transitions(node: str) -> list[dict]:
    out = labtopo.vm(node).run("tail -n 20 /var/lib/bluemind-ha/transitions.jsonl").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_paths_back_before_multipathd_reinstates_them_still_get_the_key_registered():
    """Issue 33's order, forced. The active node loses every path and its peer
    takes over (preempting its key). multipathd is stopped on the node before its
    links return: its SCSI devices run again, so its health check passes and
    keepalived leaves FAULT for BACKUP, but the BACKUP deactivation's release finds
    no usable path and fails. When multipathd comes back and reinstates the paths,
    the retry timer registers the key again and clears the failed units: the pair
    is nominal without an operator. Today's main stayed with the key unregistered."""
    active = pairstate.assert_pair_invariants()
    peer = next(n for n in NODES if n != active)
    host = labtopo.vm(active)
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(peer), 300, f"{peer} to be ready to take over")
    conf = json.loads(host.check_output("cat /etc/bluemind-ha/controller.json"))
    bound = conf["storage_grace"] + 3 * int(VARS["keepalived_check_interval"]) + 15
    for fabric in ("fabric_a", "fabric_b"):
        labtopo.labctl("link", labtopo.lab_name(), active, fabric, "off")
    try:
        labtopo.wait_for(lambda: vip_holders() == [peer], bound, f"{peer} to take the floating IP")
        labtopo.wait_for(lambda: host.run(f"test ! -e /run/bluemind-ha/active && ! mountpoint -q "
                                          f"{conf['mountpoint']}").rc == 0, 300, f"{active} to give up the storage")
        # The daemon that reinstates paths is gone until the release has failed.
        host.check_output("systemctl stop multipathd.socket multipathd.service")
        restored = float(host.check_output("date +%s.%N"))
    finally:
        for fabric in ("fabric_a", "fabric_b"):
            labtopo.labctl("link", labtopo.lab_name(), active, fabric, "on")
    try:
        labtopo.wait_for(lambda: any(t["transition"] == "deactivate" and t["started"] >= restored
                                     and t["outcome"] == "failed" for t in transitions(active)), 180,
                         f"{active}'s BACKUP deactivation to fail its release without a path")
        failed = next(t for t in transitions(active) if t["transition"] == "deactivate" and t["started"] >= restored)
        pending = controller(active).get("release_pending")
    finally:
        host.check_output("systemctl start multipathd.socket multipathd.service")
    back = time.monotonic()
    labtopo.wait_for(lambda: status(active)["registered"] == sorted(NODES), 120,
                     f"{active} to register its key again by itself")
    registered = time.monotonic() - back
    assert failed["steps"][-1]["step"] == "release" and failed["vrrp"] == "BACKUP", failed
    assert pending, "the failed release was not reported as pending"
    # The key is registered a moment before the retry's record is written.
    labtopo.wait_for(lambda: [t for t in transitions(active) if t["transition"] == "release-retry"
                              and t["started"] >= restored], 30, f"{active}'s release-retry record")
    retried = [t for t in transitions(active) if t["transition"] == "release-retry" and t["started"] >= restored]
    assert retried[-1]["outcome"] == "ok", transitions(active)
    journal = host.check_output(f"journalctl -t bluemind-ha --since @{int(restored)} --no-pager -o cat")
    assert "release-retry: the release that the deactivation of" in journal, journal
    report = controller(active)
    assert not report["release_pending"] and report["role"] == "passive", report
    failed_units = host.check_output("systemctl list-units --all --state=failed --plain --no-legend")
    assert not [u for u in failed_units.splitlines()
                if u.split()[0].startswith(("postgresql", "bm-", "postfix", "bluemind-ha-deactivate"))], \
        failed_units
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(active), 120, f"{active} to be ready to take over again")
    assert pairstate.assert_pair_invariants() == peer
    result = {"registered_after_multipathd_seconds": round(registered, 1), "pending_seconds":
              round(retried[-1]["ended"] - failed["ended"], 1), "retry_seconds": retried[-1]["seconds"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "san-release-retry.json").write_text(json.dumps(result, indent=2))
    print(f"{active}'s release retried once multipathd was back: {result}")


def test_the_filesystem_exists_once_and_is_not_in_fstab(parked):
    uuids = set()
    for node in NODES:
        host = labtopo.vm(node)
        probe = dict(line.split("=", 1) for line in
                     host.check_output(f"blkid -p -o export {DEVICE}").splitlines() if "=" in line)
        assert (probe.get("TYPE"), probe.get("LABEL")) == ("ext4", "bluemind_ha"), f"{node}: {probe}"
        uuids.add(probe["UUID"])
        assert "bluemind" not in host.file("/etc/fstab").content_string
        assert not status(node)["mounted_here"]
    assert len(uuids) == 1


def test_both_keys_are_registered_and_nobody_holds_the_lun(parked):
    for node in NODES:
        info = status(node)
        assert info["registered"] == sorted(NODES) and info["holder"] is None, info
    keys = labtopo.vm(NODES[0]).check_output(f"mpathpersist -i -k {DEVICE}")
    # One registration per path of each node.
    assert len([k for k in keys.splitlines() if k.strip().startswith("0x")]) == 2 * len(NODES), keys


def test_a_bad_multipath_file_is_refused_before_it_is_installed():
    host = labtopo.vm(NODES[0])
    host.check_output("sed 's/polling_interval/polling_intervl/' /etc/multipath/conf.d/bluemind-ha.conf"
                      " > /tmp/bad-multipath.conf")
    bad = host.run("bluemind-ha-san config-test /tmp/bad-multipath.conf")
    assert bad.rc == 2 and "polling_intervl" in bad.stderr, bad.stderr
    good = host.run("bluemind-ha-san config-test /etc/multipath/conf.d/bluemind-ha.conf")
    assert good.rc == 0, good.stderr


def test_bad_san_variables_are_refused_before_any_change(tmp_path):
    inventory = labtopo.write_inventory(tmp_path / "hosts.yml")
    report = labtopo.run_playbook("bluemind_ha.cluster.site", inventory,
                                  {"san_reservation_key": "0x42", "san_chap_password": "tooshort-9",
                                   "bluemind_ha_san_portals": ["10.60.1.10", "10.60.1.10"]})
    assert report["rc"] != 0
    assert all(report["stats"][n]["changed"] == 0 for n in NODES), report["stats"]
    failures = [str(r.get("msg", "")) for name, host, r in labtopo.task_results(report) if r["status"] == "failed"]
    # Every problem at once, each with its variable, for each node.
    for node in NODES:
        mine = [m for m in failures if m.startswith(f"{node}:")]
        assert mine, failures
        for variable in ("san_reservation_key is the same", "san_chap_password", "bluemind_ha_san_portals"):
            assert variable in mine[0], mine[0]
    assert "tooshort-9" not in json.dumps(report), "the CHAP secret reached the output"
    assert not any("Install multipath" in name for name, host, r in labtopo.task_results(report))


def filesystem_play(tmp_path: Path) -> Path:
    play = tmp_path / "filesystem.yml"
    play.write_text(
        "- name: The san role's filesystem step alone\n  hosts: bluemind_ha\n  gather_facts: false\n"
        "  tasks:\n    - name: Create the filesystem on a blank LUN\n      ansible.builtin.include_role:\n"
        "        name: bluemind_ha.cluster.san\n        tasks_from: filesystem\n")
    return play


def refusals(report) -> list[str]:
    return [str(r.get("msg", "")) for name, host, r in labtopo.task_results(report) if r["status"] == "failed"]


def test_a_foreign_signature_is_refused_in_safe_mode(parked, tmp_path):
    """Formatting a LUN that carries anything needs the run's one-shot
    bluemind_ha_format_confirm naming its WWID (issue 29): the former standing
    setting does nothing, a held reservation refuses even a confirmed run, and a
    confirmation left standing cannot erase the pair's own filesystem after a
    label change in the inventory."""
    inventory = labtopo.write_inventory(tmp_path / "hosts.yml")
    play = filesystem_play(tmp_path)
    node1 = labtopo.vm(NODES[0])
    node1.check_output(f"wipefs -q -a {DEVICE} && mkfs.ext4 -q -L olddata {DEVICE}")
    old = node1.check_output(f"blkid -p -s UUID -o value {DEVICE}")
    for extra in ({}, {"san_overwrite_signatures": True}, {"bluemind_ha_format_confirm": "/dev/mapper/bluemind"}):
        refused = labtopo.run_playbook(str(play), inventory, extra)
        assert refused["rc"] != 0, extra
        assert any(DEVICE in m and "ext4 labelled olddata" in m and f"bluemind_ha_format_confirm={WWID}" in m
                   for m in refusals(refused)), (extra, refusals(refused))
        assert node1.check_output(f"blkid -p -s UUID -o value {DEVICE}") == old, f"safe mode touched the LUN: {extra}"
    # Confirmed, but the peer holds the reservation: refused all the same.
    assert json.loads(san(NODES[1], "claim").stdout)["how"] == "reserved"
    try:
        reserved = labtopo.run_playbook(str(play), inventory, {"bluemind_ha_format_confirm": WWID})
    finally:
        san(NODES[1], "release")
    assert reserved["rc"] != 0 and any(f"reserved by {NODES[1]}" in m for m in refusals(reserved)), refusals(reserved)
    assert node1.check_output(f"blkid -p -s UUID -o value {DEVICE}") == old, "a reserved LUN was formatted"
    allowed = labtopo.run_playbook(str(play), inventory, {"bluemind_ha_format_confirm": WWID})
    assert allowed["rc"] == 0 and allowed["stats"][NODES[0]]["changed"] == 1, allowed["stats"]
    uuid = node1.check_output(f"blkid -p -s UUID -o value {DEVICE}")
    assert uuid != old
    again = labtopo.run_playbook(str(play), inventory)
    assert again["rc"] == 0 and all(again["stats"][n]["changed"] == 0 for n in NODES), again["stats"]
    assert node1.check_output(f"blkid -p -s UUID -o value {DEVICE}") == uuid, "the second run formatted again"
    # The confirmation left standing and the label changed: the pair's filesystem stays.
    relabelled = labtopo.run_playbook(str(play), inventory, {"bluemind_ha_format_confirm": WWID,
                                                             "san_filesystem_label": "relabelled"})
    assert relabelled["rc"] != 0 and any(f"the pair's own filesystem (UUID {uuid})" in m
                                         for m in refusals(relabelled)), refusals(relabelled)
    assert node1.check_output(f"blkid -p -s UUID -o value {DEVICE}") == uuid, "the pair's filesystem was formatted"


def test_takeover_preempts_and_the_old_holder_can_no_longer_write(parked):
    (n1, n2) = NODES
    first, second = labtopo.vm(n1), labtopo.vm(n2)
    assert json.loads(san(n1, "claim").stdout)["how"] == "reserved"
    assert san(n1, "holder").stdout.strip() == n1
    marker = first.check_output("cat /proc/sys/kernel/random/uuid")
    first.check_output(f"mkdir -p {MOUNT} && mount {DEVICE} {MOUNT} && echo {marker} > {MOUNT}/marker && sync")
    # Mounted and holding: releasing is refused.
    assert san(n1, "release", check=False).rc == 6

    start = time.monotonic()
    claim = json.loads(san(n2, "claim").stdout)
    claimed = time.monotonic() - start
    second.check_output(f"mkdir -p {MOUNT} && mount {DEVICE} {MOUNT}")
    mounted = time.monotonic() - start
    assert claim["how"] == f"preempted {n1}"
    assert second.check_output(f"cat {MOUNT}/marker") == marker
    assert san(n1, "holder").stdout.strip() == n2

    # The node that lost the LUN still has it mounted and believes it is active:
    # its writes, raw or through the filesystem, are refused by the array.
    raw = first.run(f"dd if=/dev/zero of={DEVICE} bs=4096 count=1 seek=4096 oflag=direct")
    assert raw.rc != 0, "the preempted node could still write to the LUN"
    assert "nexus" in first.check_output("dmesg | tail -20").lower()
    fs_write = first.run(f"echo late > {MOUNT}/late && sync -f {MOUNT}/late")
    assert fs_write.rc != 0, "the preempted node's filesystem write reached the LUN"
    # Registering again is refused while it still has the filesystem mounted.
    assert san(n1, "register", check=False).rc == 6
    first.run(f"umount {MOUNT} || umount -l {MOUNT}")
    assert json.loads(san(n1, "register").stdout)["changed"] is True
    assert status(n1)["registered"] == sorted(NODES)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"claim_s": round(claimed, 2), "claim_and_mount_s": round(mounted, 2)}
    (RESULTS / "san-takeover.json").write_text(json.dumps(result))
    print(f"takeover by preemption: {result}")


def test_a_fabric_link_cut_under_a_writer_causes_no_io_error(parked):
    """node2 holds the LUN (previous test). Cut its first fabric while a writer
    fsyncs a record every 50 ms, restore it, and check every record."""
    n2 = NODES[1]
    host = labtopo.vm(n2)
    assert status(n2)["held_here"], "the previous test should leave node2 holding the LUN"
    host.check_output(f"mountpoint -q {MOUNT} || mount {DEVICE} {MOUNT}")
    host.check_output(f"rm -f {MOUNT}/writes /var/tmp/writer.stop /var/tmp/writer.log")
    host.check_output(f"cat > /var/tmp/writer.py <<'EOF'\n{WRITER}\nEOF")
    host.check_output(f"nohup python3 /var/tmp/writer.py {MOUNT}/writes /var/tmp/writer.stop 300"
                      " >/dev/null 2>&1 &")
    labtopo.wait_for(lambda: host.run("test -s /var/tmp/writer.log").rc == 0, 30, "the writer to start")
    try:
        labtopo.wait_for(lambda: host.run("test $(wc -l < /var/tmp/writer.log) -gt 20").rc == 0, 30,
                         "a baseline of writes before the fault")
        cut = time.time()
        labtopo.labctl("link", labtopo.lab_name(), n2, "fabric_a", "off")
        labtopo.wait_for(lambda: status(n2)["active_paths"] == 1, 60, "multipath to fail the cut path")
        failed = time.time()
        labtopo.wait_for(lambda: host.run("test $(wc -l < /var/tmp/writer.log) -gt 40").rc == 0, 60,
                         "writes through the remaining path")
    finally:
        labtopo.labctl("link", labtopo.lab_name(), n2, "fabric_a", "on")
    restored = time.time()
    labtopo.wait_for(lambda: status(n2)["active_paths"] == 2, 120, "the restored path to be active again")
    reinstated = time.time()
    lines_before = int(host.check_output("wc -l < /var/tmp/writer.log"))
    labtopo.wait_for(lambda: int(host.check_output("wc -l < /var/tmp/writer.log")) > lines_before + 40, 60,
                     "writes through both paths again")
    host.check_output("touch /var/tmp/writer.stop")
    labtopo.wait_for(lambda: host.run("pgrep -f /var/tmp/writer.py").rc != 0, 30, "the writer to stop")
    log = [line.split() for line in host.check_output("cat /var/tmp/writer.log").splitlines()]
    errors = [entry for entry in log if entry[3] != "ok"]
    assert not errors, f"the writer saw I/O errors: {errors[:5]}"
    written = host.check_output(f"cat {MOUNT}/writes").split()
    assert [int(s) for s in written] == list(range(1, len(log) + 1)), "records are missing or out of order"
    durations = [float(e[1]) - float(e[0]) for e in log]
    gaps = [float(b[1]) - float(a[1]) for a, b in zip(log, log[1:])]
    result = {"writes": len(log), "longest_write_s": round(max(durations), 2),
              "longest_gap_between_writes_s": round(max(gaps), 2),
              "median_write_s": round(statistics.median(durations), 3),
              "path_failed_after_s": round(failed - cut, 1), "path_back_after_s": round(reinstated - restored, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "san-path-loss.json").write_text(json.dumps(result))
    print(f"fabric link cut under a writer: {result}")
    # Both paths carry node2's key again: multipathd registers a reinstated path.
    keys = host.check_output(f"mpathpersist -i -k {DEVICE}")
    assert len([k for k in keys.splitlines() if k.strip().startswith("0x")]) >= 2, keys
    host.check_output(f"umount {MOUNT}")
    assert json.loads(san(n2, "release").stdout)["changed"] is True
    assert san(n2, "holder").stdout.strip() == "none"


def test_a_fenced_node_rejoins_by_itself_after_a_reboot(parked):
    """node2 takes the LUN and removes node1's key (what a takeover does to the
    old holder). node1 is then powered off and on: at boot open-iscsi logs in
    again, multipath rebuilds the map, and bluemind-ha-san-register.service
    registers node1's key again, so node1 can take over later. Nothing mounts."""
    (n1, n2) = NODES
    keys = json.loads(labtopo.vm(n2).check_output("cat /etc/bluemind-ha/san.json"))["keys"]
    san(n2, "claim")
    labtopo.vm(n2).check_output(f"mpathpersist --out --preempt --param-rk={keys[n2]} --param-sark={keys[n1]}"
                                f" --prout-type=5 {DEVICE}")
    assert status(n2)["registered"] == [n2]
    labtopo.labctl("power", labtopo.lab_name(), n1, "off")
    labtopo.labctl("power", labtopo.lab_name(), n1, "on", "--wait")
    labtopo.vm.cache_clear()
    host = labtopo.vm(n1)
    labtopo.wait_for(lambda: host.run("systemctl is-active bluemind-ha-san-register").stdout.strip()
                     in ("active", "failed"), 180, "the key registration unit to finish at boot")
    assert host.run("systemctl is-active bluemind-ha-san-register").stdout.strip() == "active", \
        host.run("journalctl -b -u bluemind-ha-san-register --no-pager | tail -20").stdout
    info = status(n1)
    assert info["active_paths"] == 2 and info["registered"] == sorted(NODES), info
    assert info["holder"] == n2 and not info["mounted_here"], info
    assert san(n2, "release").stdout and status(n2)["holder"] is None
