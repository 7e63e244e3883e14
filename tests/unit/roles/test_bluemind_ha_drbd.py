"""The DRBD command's decisions, without DRBD: /proc/drbd parsing, the outdate
protocol (authenticated, replay-proof), and the fence-peer handler's choice of
exit code, which decides whether DRBD resumes I/O (a wrong code here is a
split brain)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "roles" / "drbd" / "files" / "bluemind_ha_drbd.py"
NODE_LIBRARY = Path(__file__).resolve().parents[3] / "roles" / "node" / "files" / "bluemind_ha_node.py"
PROC_SYNCING = """version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420
 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
    ns:524288 nr:0 dw:0 dr:526400 al:8 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:1572864
\t[====>...............] sync'ed: 25.1% (1536/2047)M
\tfinish: 0:00:42 speed: 36,480 (36,480) K/sec
"""
PROC_FROZEN = """version: 8.4.11 (api:1/proto:86-101)
 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown C s---d-
"""
CONF = {"node": "node1", "peer": "node2", "resource": "bluemind", "minor": 0, "device": "/dev/drbd0",
        "disk": "/dev/vdb", "secret": "a-shared-secret-of-some-length", "peer_address": "192.168.60.12",
        "listen_address": "192.168.60.11", "fencing": "stonith", "fence_command": "/usr/local/sbin/bluemind-ha-fence",
        "fence_timeout": 150, "promote_timeout": 180, "outdate_port": 7790, "outdate_timeout": 1,
        "outdate_attempts": 1, "peer_wait": 0.2, "disconnect_wait": 0.2}


@pytest.fixture()
def drbd(monkeypatch, load_program):
    module = load_program(SOURCE)
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    return module


def test_proc_drbd_gives_states_and_sync_progress(drbd):
    state = drbd.parse_proc_drbd(PROC_SYNCING, 0)
    assert (state["connection"], state["role"], state["peer_role"]) == ("SyncSource", "Primary", "Secondary")
    assert (state["disk"], state["peer_disk"]) == ("UpToDate", "Inconsistent")
    assert state["sync_percent"] == 25.1 and state["sync_kib_per_s"] == 36480 and state["sync_eta_s"] == 42
    assert not state["io_suspended"]
    frozen = drbd.parse_proc_drbd(PROC_FROZEN, 0)
    assert frozen["io_suspended"] and frozen["peer_disk"] == "DUnknown"
    assert drbd.parse_proc_drbd(PROC_FROZEN, 1) == {}


def request(drbd, conf, **override):
    now = time.time()
    msg = {"resource": conf["resource"], "node": conf["peer"], "time": now, "nonce": "n1"}
    msg.update(override)
    msg.setdefault("mac", drbd.mac(conf["secret"], msg["resource"], msg["node"], msg["time"], msg["nonce"]))
    return json.dumps(msg)


def test_the_outdate_server_only_obeys_the_authenticated_peer_once(drbd, monkeypatch):
    server_conf = dict(CONF, node="node2", peer="node1")
    monkeypatch.setattr(drbd, "outdate_locally", lambda conf: "outdated")
    seen = set()
    reply = json.loads(drbd.answer(server_conf, request(drbd, server_conf), seen))
    assert reply["result"] == "outdated"
    assert reply["mac"] == drbd.mac(server_conf["secret"], "outdated", "n1")
    assert drbd.answer(server_conf, request(drbd, server_conf), seen) is None, "a replayed request was obeyed"
    assert drbd.answer(server_conf, request(drbd, server_conf, nonce="n2", mac="0" * 64), seen) is None
    assert drbd.answer(server_conf, request(drbd, server_conf, nonce="n3", time=time.time() - 300), seen) is None
    assert drbd.answer(server_conf, request(drbd, server_conf, nonce="n4", node="node3"), seen) is None
    assert drbd.answer(server_conf, "not json", seen) is None


@pytest.mark.parametrize("peer_says,fencing,fence_rc,expected", [
    ("outdated", "stonith", None, 4),
    ("inconsistent", "stonith", None, 3),
    ("primary", "stonith", None, 6),
    ("unreachable", "stonith", 0, 7),
    ("unreachable", "stonith", 3, 1),
    ("error: something", "stonith", 0, 7),
    ("unauthenticated", "stonith", 0, 7),
    ("unreachable", "outdate", None, 5),
    # A peer that answered, or an answer without the secret's MAC, is never a
    # dead peer (issue 29): outdate mode has no power-off, so I/O stays frozen.
    ("error: disk busy", "outdate", None, 1),
    ("unauthenticated", "outdate", None, 1),
    ("silent", "outdate", None, 1),
    ("silent", "stonith", 0, 7),
    ("a result this version does not know", "outdate", None, 1),
])
def test_fence_peer_exit_codes(drbd, monkeypatch, peer_says, fencing, fence_rc, expected):
    calls = []
    monkeypatch.setattr(drbd, "ask_peer_to_outdate", lambda conf: peer_says)

    def run(argv, check=True, timeout=120):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, fence_rc, "", "")

    monkeypatch.setattr(drbd, "run", run)
    assert drbd.fence_peer(dict(CONF, fencing=fencing, alert_command="notify-admins")) == expected
    fences = [argv for argv in calls if argv[0] != "/bin/sh"]
    alerts = [argv[4:] for argv in calls if argv[0] == "/bin/sh"]
    # Power is only cut when the peer could not be outdated, and only in stonith mode.
    assert bool(fences) == (fence_rc is not None)
    if fences:
        assert fences == [["/usr/local/sbin/bluemind-ha-fence", "off"]]
    # Every exit that leaves I/O frozen alerts, and only those.
    assert alerts == ([["fencing-failed", "bluemind", "node1"]] if expected == 1 else [])


def serve_once(reply_for):
    """A one-shot outdate server on the loopback that answers reply_for(request)
    (nothing when it returns None)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer():
        conn = server.accept()[0]
        with conn, server:
            request = json.loads(conn.makefile().readline())
            reply = reply_for(request)
            if reply is not None:
                conn.sendall((json.dumps(reply) + "\n").encode())
    threading.Thread(target=answer, daemon=True).start()
    return port


@pytest.mark.parametrize("result,signed,expected", [
    ("outdated", True, "outdated"),
    ("error: disk busy", True, "error: disk busy"),
    ("outdated", False, "unauthenticated"),
    (None, True, "silent"),
])
def test_the_peer_s_answer_counts_only_with_the_secret_s_mac(drbd, result, signed, expected):
    conf = dict(CONF, peer_address="127.0.0.1", outdate_timeout=5)

    def reply_for(request):
        if result is None:  # the request ignored (a replay, a clock too far apart)
            return None
        secret = conf["secret"] if signed else "another-secret-of-some-length"
        return {"result": result, "nonce": request["nonce"], "mac": drbd.mac(secret, result, request["nonce"])}
    conf["outdate_port"] = serve_once(reply_for)
    assert drbd.ask_peer_to_outdate(conf) == expected


def states_in_turn(*states):
    """resource_state() answers each state in turn, then repeats the last one."""
    seen = []

    def state(conf):
        seen.append(1)
        return dict(states[min(len(seen), len(states)) - 1])
    return state


def test_promote_refuses_an_outdated_disk_or_a_peer_that_stays_primary(drbd, monkeypatch):
    monkeypatch.setattr(drbd, "resource_state", states_in_turn(
        {"up": True, "role": "Secondary", "disk": "Outdated", "peer_role": "Unknown"}))
    with pytest.raises(drbd.DrbdError) as outdated:
        drbd.do_promote(CONF)
    assert outdated.value.code == drbd.NOT_UPTODATE
    monkeypatch.setattr(drbd, "resource_state", states_in_turn(
        {"up": True, "role": "Secondary", "disk": "UpToDate", "peer_role": "Primary", "connection": "Connected"}))
    monkeypatch.setattr(drbd, "run", lambda *a, **k: pytest.fail("promoted beside a Primary"))
    with pytest.raises(drbd.DrbdError) as primary:
        drbd.do_promote(CONF)
    assert primary.value.code == drbd.PEER_PRIMARY


def test_promote_waits_for_drbd_to_notice_a_dead_primary(drbd, monkeypatch):
    """Powered off, the old Primary is still shown as Primary until DRBD's ping
    times out: promote waits that long instead of refusing."""
    alive = {"up": True, "role": "Secondary", "disk": "UpToDate", "peer_role": "Primary", "connection": "Connected"}
    gone = dict(alive, peer_role="Unknown", connection="WFConnection", peer_disk="DUnknown")
    monkeypatch.setattr(drbd, "resource_state", states_in_turn(alive, alive, gone, dict(gone, role="Primary")))
    calls = []
    monkeypatch.setattr(drbd, "run", lambda argv, **k: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    assert drbd.do_promote(dict(CONF, peer_wait=30)) is True
    assert calls == [["drbdadm", "primary", "bluemind"]]


def test_a_connected_node_waits_for_the_link_to_drop_before_outdating(drbd, monkeypatch):
    """The peer lost the link first; DRBD refuses to outdate a connected disk."""
    connected = {"up": True, "role": "Secondary", "disk": "UpToDate", "connection": "Connected"}
    lost = dict(connected, connection="WFConnection")
    monkeypatch.setattr(drbd, "resource_state", states_in_turn(connected, connected, lost, dict(lost, disk="Outdated")))
    calls = []
    monkeypatch.setattr(drbd, "run", lambda argv, **k: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    assert drbd.outdate_locally(dict(CONF, disconnect_wait=30)) == "outdated"
    assert calls == [["drbdadm", "outdate", "bluemind"]]


def test_a_handler_started_without_standard_streams_still_answers(tmp_path):
    """DRBD runs its handlers from the kernel with fds 0-2 closed: the command
    must still log and exit with its own code (2: no configuration), not crash (1).
    Installed as on a node: the program beside the node library."""
    program = tmp_path / SOURCE.name
    shutil.copy(SOURCE, program)
    shutil.copy(NODE_LIBRARY, tmp_path / NODE_LIBRARY.name)
    proc = subprocess.run([sys.executable, str(program), "--config", str(tmp_path / "none.json"), "fence-peer"],
                          preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)], check=False)
    assert proc.returncode == 1  # fence-peer reports every failure as 1 (I/O stays frozen)
    proc = subprocess.run([sys.executable, str(program), "--config", str(tmp_path / "none.json"), "status"],
                          preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)], check=False)
    assert proc.returncode == 2


def test_probe_needs_its_three_arguments(drbd):
    assert drbd.probe_args(["--resource", "bluemind", "--minor", "0", "--disk", "/dev/vdb"]) == ("bluemind", 0, "/dev/vdb")
    for bad in (["--resource", "bluemind"], ["--resource", "r", "--minor", "x", "--disk", "/dev/vdb"]):
        with pytest.raises(drbd.DrbdError) as usage:
            drbd.probe_args(bad)
        assert usage.value.code == drbd.USAGE


def test_an_unreachable_peer_answers_unreachable(drbd):
    conf = dict(CONF, peer_address="127.0.0.1", outdate_port=9, outdate_timeout=0.5)
    assert drbd.ask_peer_to_outdate(conf) == "unreachable"


class Clock:
    """time.time() that advances only when the code under test sleeps."""

    def __init__(self, start=1000.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def down_with(drbd, monkeypatch, tmp_path, states, demoted_ago, wait=30):
    """Run do_down with resource_state answering states in turn; the demotion
    stamp demoted_ago seconds old (None: no stamp). Returns (drbdadm calls, the
    resource states read, the seconds do_down waited)."""
    clock = Clock()
    stamp = tmp_path / "demoted"
    if demoted_ago is None:
        stamp.unlink(missing_ok=True)
    else:
        stamp.write_text(f"{clock.now - demoted_ago}\n")
    read = []
    answer = states_in_turn(*states)
    monkeypatch.setattr(drbd, "resource_state", lambda conf: read.append(1) or answer(conf))
    calls = []
    monkeypatch.setattr(drbd, "run", lambda argv, **k: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    conf = dict(CONF, demote_stamp=str(stamp), handover_wait=wait, handover_window=120)
    assert drbd.do_down(conf, clock=clock, sleep=clock.sleep) is True
    return calls, len(read), clock.now - 1000.0


SECONDARIES = {"up": True, "connection": "Connected", "role": "Secondary", "peer_role": "Secondary",
               "disk": "UpToDate", "peer_disk": "UpToDate"}


def test_a_node_demoted_by_its_shutdown_waits_for_the_peer_to_be_primary_before_going_down(
        drbd, monkeypatch, tmp_path):
    """The active node's clean reboot: taken down at once, two Secondaries
    disconnected and the peer's promotion fenced (powered off) the rebooting node.
    It waits until the peer is Primary, then disconnects."""
    taken_over = dict(SECONDARIES, peer_role="Primary")
    calls, reads, waited = down_with(drbd, monkeypatch, tmp_path, [SECONDARIES, SECONDARIES, SECONDARIES, taken_over],
                                     demoted_ago=5)
    assert calls == [["drbdadm", "down", "bluemind"]]
    assert reads == 4 and waited == 1.5


def test_down_is_immediate_without_a_recent_demotion_or_beside_a_primary(drbd, monkeypatch, tmp_path):
    # The passive node's reboot: the peer is Primary already.
    calls, reads, waited = down_with(drbd, monkeypatch, tmp_path, [dict(SECONDARIES, peer_role="Primary")],
                                     demoted_ago=5)
    assert (calls, waited) == ([["drbdadm", "down", "bluemind"]], 0)
    # A pair parked long ago, or never demoted on this boot: nobody is taking over.
    for ago in (None, 600):
        calls, reads, waited = down_with(drbd, monkeypatch, tmp_path, [SECONDARIES], demoted_ago=ago)
        assert (calls, waited) == ([["drbdadm", "down", "bluemind"]], 0)
    # The peer's disk is not UpToDate: it cannot take over, no point waiting.
    calls, reads, waited = down_with(drbd, monkeypatch, tmp_path, [dict(SECONDARIES, peer_disk="Inconsistent")],
                                     demoted_ago=5)
    assert waited == 0


def test_down_waits_at_most_its_bound_for_a_peer_that_never_takes_over(drbd, monkeypatch, tmp_path):
    calls, reads, waited = down_with(drbd, monkeypatch, tmp_path, [SECONDARIES], demoted_ago=5, wait=30)
    assert calls == [["drbdadm", "down", "bluemind"]]
    assert 30 <= waited <= 30.5


def test_a_resource_already_down_is_left_alone(drbd, monkeypatch):
    monkeypatch.setattr(drbd, "resource_state", lambda conf: {"loaded": True, "up": False})
    monkeypatch.setattr(drbd, "run", lambda *a, **k: pytest.fail("took down a resource that is not up"))
    assert drbd.do_down(CONF) is False


def test_demote_records_when_it_demoted(drbd, monkeypatch, tmp_path):
    monkeypatch.setattr(drbd, "resource_state", lambda conf: {"up": True, "role": "Primary"})
    monkeypatch.setattr(drbd, "device_open", lambda conf: False)
    monkeypatch.setattr(drbd, "run", lambda argv, **k: subprocess.CompletedProcess(argv, 0, "", ""))
    stamp = tmp_path / "run" / "demoted"
    assert drbd.do_demote(dict(CONF, demote_stamp=str(stamp))) is True
    assert abs(float(stamp.read_text()) - time.time()) < 5


def wipe_with(drbd, monkeypatch, signatures, identity, attached=None, held=False):
    """Run wipe against a probe that answers the given state; returns the
    commands it ran."""
    calls = []
    monkeypatch.setattr(drbd, "probe", lambda resource, minor, disk: {
        "disk": disk, "disk_path": "/dev/vdb", "signatures": signatures, "identity": identity,
        "attached": attached, "metadata": False, "foreign": signatures, "state": {}})
    monkeypatch.setattr(drbd, "disk_held", lambda path: held)
    monkeypatch.setattr(drbd, "run", lambda argv, **k: calls.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    return calls


SERIAL_ONLY = {"wwn": None, "serial": "drbd-a1", "names": ["drbd-a1"]}


def test_wipe_erases_only_under_a_confirmation_naming_the_disk(drbd, monkeypatch):
    old = [{"type": "ext4", "label": "olddata"}]
    calls = wipe_with(drbd, monkeypatch, old, SERIAL_ONLY)
    for wrong in ("", "/dev/vdb", "drbd-a2"):
        with pytest.raises(drbd.DrbdError) as refused:
            drbd.wipe("bluemind", 0, "/dev/disk/by-id/virtio-drbd-a1", wrong)
        assert refused.value.code == drbd.NOT_CONFIRMED
        assert "bluemind_ha_format_confirm=drbd-a1" in str(refused.value) and "ext4 labelled olddata" in str(refused.value)
    assert calls == []
    assert drbd.wipe("bluemind", 0, "/dev/disk/by-id/virtio-drbd-a1", "DRBD-A1") == {"changed": True, "wiped": ["ext4"]}
    assert calls == [["wipefs", "--all", "--force", "/dev/vdb"]]


def test_wipe_refuses_a_disk_in_use_or_without_identity_and_leaves_a_blank_one(drbd, monkeypatch):
    old = [{"type": "drbd", "label": None}]
    calls = wipe_with(drbd, monkeypatch, old, SERIAL_ONLY, attached="/dev/vdb")
    with pytest.raises(drbd.DrbdError) as attached:
        drbd.wipe("bluemind", 0, "/dev/vdb", "drbd-a1")
    assert attached.value.code == drbd.BUSY and "take it down" in str(attached.value)
    calls = wipe_with(drbd, monkeypatch, old, SERIAL_ONLY, held=True)
    with pytest.raises(drbd.DrbdError) as held:
        drbd.wipe("bluemind", 0, "/dev/vdb", "drbd-a1")
    assert held.value.code == drbd.BUSY
    calls = wipe_with(drbd, monkeypatch, old, {"wwn": None, "serial": None, "names": []})
    with pytest.raises(drbd.DrbdError) as nameless:
        drbd.wipe("bluemind", 0, "/dev/vdb", "anything")
    assert nameless.value.code == drbd.NOT_CONFIRMED and "wipefs -a /dev/vdb" in str(nameless.value)
    calls = wipe_with(drbd, monkeypatch, [], SERIAL_ONLY)
    assert drbd.wipe("bluemind", 0, "/dev/vdb", "") == {"changed": False, "wiped": []} and calls == []


def test_wipe_needs_its_confirmation_argument(drbd):
    args = ["--resource", "bluemind", "--minor", "0", "--disk", "/dev/vdb"]
    assert drbd.probe_args(args + ["--confirm", "x"], "wipe") == ("bluemind", 0, "/dev/vdb", "x")
    with pytest.raises(drbd.DrbdError) as usage:
        drbd.probe_args(args, "wipe")
    assert usage.value.code == drbd.USAGE and "--confirm IDENTITY" in str(usage.value)
