"""The LUN command's decisions, without a SAN: its parsers on outputs recorded
in the lab (multipath-tools 0.9.4, open-iscsi 2.1.8, LIO), and claim, release
and register against FakeArray, a test double that answers mpathpersist the way
a SCSI-3 target does (registrations per key, one Write Exclusive - Registrants
Only reservation, preempt removes the preempted key). The lab's san scenario
runs the command against a real LIO target."""
import json
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "roles" / "san" / "files" / "bluemind_ha_san.py"

READ_KEYS = """  PR generation=0x4, \t4 registered reservation keys follow:
    0x1111
    0x1111
    0x2222
    0x2222
"""
NO_RESERVATION = "  PR generation=0x2, there is NO reservation held \n"
RESERVATION = """  PR generation=0xb, Reservation follows:
   Key = 0x2222
  scope = LU_SCOPE, type = Write Exclusive, registrants only
"""
PATHS = "bluemind sda active ready running\nbluemind sdb failed faulty offline\nother sdc active ready running\n"
NODES = "10.60.1.10:3260,1 iqn.2026-11.test.lab:bluemind\n[fd00::10]:3260,1 iqn.2026-11.test.lab:bluemind\n"
SESSIONS = "tcp: [1] 10.60.1.10:3260,1 iqn.2026-11.test.lab:bluemind (non-flash)\n"
MOUNTINFO = "22 27 0:20 / /sys rw - sysfs sysfs rw\n95 27 254:0 / /srv/bluemind rw - ext4 /dev/mapper/bluemind rw\n"


@pytest.fixture()
def san(load_program):
    return load_program(SOURCE)


def test_parsers_read_the_recorded_outputs(san):
    assert san.parse_keys(READ_KEYS) == [0x1111, 0x1111, 0x2222, 0x2222]
    assert san.parse_reservation(NO_RESERVATION) is None
    assert san.parse_reservation(RESERVATION) == (0x2222, "Write Exclusive, registrants only")
    assert san.parse_paths(PATHS, "bluemind") == [
        {"device": "sda", "dm_state": "active", "checker": "ready", "state": "running"},
        {"device": "sdb", "dm_state": "failed", "checker": "faulty", "state": "offline"}]
    assert san.parse_iscsiadm_records(NODES) == [("10.60.1.10", "iqn.2026-11.test.lab:bluemind"),
                                                 ("fd00::10", "iqn.2026-11.test.lab:bluemind")]
    assert san.parse_iscsiadm_records(SESSIONS) == [("10.60.1.10", "iqn.2026-11.test.lab:bluemind")]
    assert san.mounted_devices(MOUNTINFO) == {(0, 20), (254, 0)}


def test_a_garbled_reservation_answer_is_an_error_not_no_reservation(san):
    with pytest.raises(san.SanError):
        san.parse_reservation("  PR generation=0x3, Reservation follows:\n")


def test_multipath_complaints_are_caught(san):
    stderr = ("Nov 25 | /etc/multipath/conf.d/bluemind-ha.conf line 4, invalid keyword: polling_intervl\n"
              "Nov 25 | some harmless notice\n")
    assert san.config_problems(stderr) == [stderr.splitlines()[0]]


class FakeArray:
    """A SCSI-3 PR target seen by two nodes, each with two paths."""

    def __init__(self):
        self.registered = {}   # node -> key (one per node: both of its paths register together)
        self.holder = None     # (node, key)
        self.writes = []
        # The other node's move, made just before this node's next reservation
        # command (the race of a peer releasing while this node preempts).
        self.meanwhile = None
        self.prouts = []

    def mpathpersist(self, node, argv):
        args = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv[1:-1])
        out = ""
        if "--out" in args and "--register-ignore" not in args:
            self.prouts.append((node, next(a for a in ("--reserve", "--preempt", "--release") if a in args)))
            if self.meanwhile:
                move, self.meanwhile = self.meanwhile, None
                move()
        if "--in" in args and "--read-keys" in args:
            out = "  PR generation=0x1, keys follow:\n" + "".join(
                f"    0x{k:x}\n    0x{k:x}\n" for k in self.registered.values())
        elif "--in" in args:
            out = NO_RESERVATION if not self.holder else (
                f"  PR generation=0x1, Reservation follows:\n   Key = 0x{self.holder[1]:x}\n"
                "  scope = LU_SCOPE, type = Write Exclusive, registrants only\n")
        elif "--register-ignore" in args:
            self.registered[node] = int(args["--param-sark"], 16)
        elif node not in self.registered or self.registered[node] != int(args["--param-rk"], 16):
            return subprocess.CompletedProcess(argv, 24, "", "reservation conflict")
        elif "--reserve" in args:
            if self.holder and self.holder[0] != node:
                return subprocess.CompletedProcess(argv, 24, "", "reservation conflict")
            self.holder = (node, self.registered[node])
        elif "--preempt" in args:
            victim = int(args["--param-sark"], 16)
            self.registered = {n: k for n, k in self.registered.items() if k != victim}
            if self.holder and self.holder[1] == victim:
                self.holder = (node, self.registered[node])
        elif "--release" in args and self.holder and self.holder[0] == node:
            self.holder = None
        return subprocess.CompletedProcess(argv, 0, out, "")

    def can_write(self, node):
        return self.holder is None or node in self.registered


@pytest.fixture()
def array(san, monkeypatch):
    fake = FakeArray()
    fake.mounted = set()
    fake.node = "node1"

    def run(argv, check=True, stdin=None):
        assert argv[0] == "mpathpersist", argv
        return fake.mpathpersist(fake.node, argv)

    monkeypatch.setattr(san, "run", run)
    monkeypatch.setattr(san.Lun, "present", lambda self: True)
    monkeypatch.setattr(san.Lun, "mounted", lambda self: self.conf["node"] in fake.mounted)
    monkeypatch.setattr(san.Lun, "paths", lambda self: san.parse_paths(PATHS, "bluemind"))
    return fake


def lun(san, array, node):
    array.node = node
    keys = {"node1": "0x1111", "node2": "0x2222"}
    return san.Lun({"node": node, "alias": "bluemind", "device": "/dev/mapper/bluemind", "wwid": "36001",
                    "key": keys[node], "keys": keys})


def test_claim_reserves_then_is_idempotent(san, array):
    assert san.do_claim(lun(san, array, "node1")) == (True, "reserved")
    assert array.holder == ("node1", 0x1111)
    assert san.do_claim(lun(san, array, "node1")) == (False, "already held")


def test_claim_by_the_other_node_preempts_and_fences_the_old_holder(san, array):
    san.do_register(lun(san, array, "node2"))
    san.do_claim(lun(san, array, "node1"))
    changed, how = san.do_claim(lun(san, array, "node2"))
    assert (changed, how) == (True, "preempted node1")
    assert array.holder == ("node2", 0x2222)
    assert not array.can_write("node1") and array.can_write("node2")


def test_a_fenced_node_that_still_mounts_cannot_register_or_claim(san, array):
    san.do_claim(lun(san, array, "node1"))
    array.mounted.add("node1")
    san.do_claim(lun(san, array, "node2"))
    with pytest.raises(san.SanError) as busy:
        san.do_register(lun(san, array, "node1"))
    assert busy.value.code == san.BUSY
    with pytest.raises(san.SanError) as conflict:
        san.do_claim(lun(san, array, "node1"))
    assert conflict.value.code == san.CONFLICT
    assert array.holder[0] == "node2"
    # Unmounted (the rejoin after a reboot), it registers again.
    array.mounted.clear()
    assert san.do_register(lun(san, array, "node1")) is True
    assert san.do_register(lun(san, array, "node1")) is False


def test_claim_reserves_when_the_holder_releases_while_it_preempts(san, array):
    """The race of the lab's public-link check: node1 (its link cut) finishes its
    deactivation and releases the LUN between node2's read of the reservation
    and node2's PREEMPT. That PREEMPT then only removes node1's key; node2 must
    reserve, not report a conflict (which failed its activation and sent the
    service back to node1)."""
    san.do_register(lun(san, array, "node2"))
    san.do_claim(lun(san, array, "node1"))

    def node1_releases():
        array.holder = None
    array.meanwhile = node1_releases
    changed, how = san.do_claim(lun(san, array, "node2"))
    assert (changed, how) == (True, "preempted node1, then reserved")
    assert array.holder == ("node2", 0x2222)
    assert array.prouts == [("node1", "--reserve"), ("node2", "--preempt"), ("node2", "--reserve")]
    # node1's release registers its key again once it has nothing mounted.
    assert san.do_release(lun(san, array, "node1")) is True
    assert array.registered == {"node1": 0x1111, "node2": 0x2222} and array.holder[0] == "node2"


def test_claim_does_not_take_back_a_lun_another_node_reserved_meanwhile(san, array):
    """Both nodes claiming at once (both VRRP masters): the one that loses the
    race reports the conflict instead of preempting back, which would only
    bounce the LUN between them."""
    san.do_register(lun(san, array, "node1"))
    san.do_register(lun(san, array, "node2"))

    def node1_reserves():
        array.holder = ("node1", 0x1111)
    array.meanwhile = node1_reserves
    with pytest.raises(san.SanError) as conflict:
        san.do_claim(lun(san, array, "node2"))
    assert conflict.value.code == san.CONFLICT
    assert "after reserved: the reservation is held by node1" in str(conflict.value)
    assert array.prouts == [("node2", "--reserve")] and array.holder[0] == "node1"


def test_release_refuses_while_mounted_and_only_releases_its_own(san, array):
    san.do_claim(lun(san, array, "node1"))
    san.do_register(lun(san, array, "node2"))
    assert san.do_release(lun(san, array, "node2")) is False
    assert array.holder[0] == "node1"
    array.mounted.add("node1")
    with pytest.raises(san.SanError) as busy:
        san.do_release(lun(san, array, "node1"))
    assert busy.value.code == san.BUSY
    array.mounted.clear()
    assert san.do_release(lun(san, array, "node1")) is True
    assert array.holder is None


def test_status_names_the_holder_and_counts_active_paths(san, array, monkeypatch):
    san.do_register(lun(san, array, "node2"))
    san.do_claim(lun(san, array, "node1"))
    node2 = lun(san, array, "node2")
    monkeypatch.setattr(san.Lun, "paths", lambda self: san.parse_paths(PATHS, "bluemind"))
    info = san.status(node2)
    assert info["holder"] == "node1" and info["registered"] == ["node1", "node2"]
    assert info["registered_here"] and not info["held_here"] and info["active_paths"] == 1


def test_mkfs_formats_only_a_blank_lun_and_refuses_foreign_data(san, monkeypatch, tmp_path):
    calls = []
    signatures = []

    def run(argv, check=True, stdin=None):
        calls.append(argv)
        if argv[0] == "wipefs" and argv[1] == "--json":
            return subprocess.CompletedProcess(argv, 0, json.dumps({"signatures": signatures}), "")
        if argv[0] == "blkid":
            return subprocess.CompletedProcess(argv, 2, "", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(san, "run", run)
    monkeypatch.setattr(san.Lun, "present", lambda self: True)
    monkeypatch.setattr(san.Lun, "mounted", lambda self: False)
    monkeypatch.setattr(san.Lun, "reservation", lambda self: None)
    monkeypatch.setattr(san.Lun, "paths", lambda self: san.parse_paths(PATHS, "bluemind"))
    monkeypatch.setattr(san, "STATE_DIR", str(tmp_path))
    conf = {"node": "node1", "alias": "bluemind", "device": "/dev/mapper/bluemind", "wwid": "36001",
            "key": "0x1", "keys": {"node1": "0x1"}}
    assert san.do_mkfs(conf, "ext4", "bluemind_ha", "", False, [])["changed"] is True
    assert [c[0] for c in calls if c[0] in ("wipefs", "mkfs.ext4")][-1] == "mkfs.ext4"
    assert [c for c in calls if c[0] == "mkfs.ext4"][0][-1] == "/dev/mapper/bluemind"
    signatures.append({"type": "ext4", "label": "bluemind_ha", "offset": "0x438", "uuid": "uuid-1"})
    calls.clear()
    assert san.do_mkfs(conf, "ext4", "bluemind_ha", "", False, [])["changed"] is False
    assert not any(c[0].startswith("mkfs") for c in calls)
    signatures[0] = {"type": "xfs", "label": "olddata", "offset": "0x0", "uuid": "uuid-old"}
    for confirm in ("", "36002", "/dev/mapper/bluemind"):
        with pytest.raises(san.SanError) as foreign:
            san.do_mkfs(conf, "ext4", "bluemind_ha", confirm, False, [])
        assert foreign.value.code == san.FOREIGN
        assert "xfs labelled olddata" in str(foreign.value)
        assert "-e bluemind_ha_format_confirm=36001" in str(foreign.value)
    assert san.do_mkfs(conf, "ext4", "bluemind_ha", "36001", True, []) == {"changed": True, "would": "wipe and format"}
    calls.clear()
    san.do_mkfs(conf, "ext4", "bluemind_ha", "36001", False, [])
    assert [c[0] for c in calls if c[0] in ("wipefs", "mkfs.ext4")][-2:] == ["wipefs", "mkfs.ext4"]
    assert ["wipefs", "--all", "/dev/mapper/bluemind"] in calls


def test_mkfs_never_formats_a_reserved_lun_or_the_pair_s_own_filesystem(san, monkeypatch, tmp_path):
    """The confirmation is one-shot in effect: left standing, it still cannot
    erase the filesystem the pair uses (a changed label or type in the
    inventory), nor a LUN a node holds."""
    found = [{"type": "ext4", "label": "bluemind_ha", "offset": "0x438", "uuid": "uuid-pair"}]
    calls = []

    def run(argv, check=True, stdin=None):
        calls.append(argv)
        if argv[0] == "wipefs" and argv[1] == "--json":
            return subprocess.CompletedProcess(argv, 0, json.dumps({"signatures": found}), "")
        if argv[:2] == ["blkid", "-p"] and "UUID" in argv:
            return subprocess.CompletedProcess(argv, 0, found[0]["uuid"] + "\n", "")
        return subprocess.CompletedProcess(argv, 2, "", "")

    holder = {"value": None}
    monkeypatch.setattr(san, "run", run)
    monkeypatch.setattr(san, "STATE_DIR", str(tmp_path))
    monkeypatch.setattr(san.Lun, "present", lambda self: True)
    monkeypatch.setattr(san.Lun, "mounted", lambda self: False)
    monkeypatch.setattr(san.Lun, "reservation", lambda self: holder["value"])
    monkeypatch.setattr(san.Lun, "paths", lambda self: san.parse_paths(PATHS, "bluemind"))
    conf = {"node": "node1", "alias": "bluemind", "device": "/dev/mapper/bluemind", "wwid": "36001",
            "key": "0x1", "keys": {"node1": "0x1", "node2": "0x2"}}
    # A run that finds the pair's filesystem records it.
    assert san.do_mkfs(conf, "ext4", "bluemind_ha", "", False, [])["changed"] is False
    assert json.loads((tmp_path / "san-filesystem.json").read_text())["uuid"] == "uuid-pair"
    with pytest.raises(san.SanError) as ours:
        san.do_mkfs(conf, "ext4", "newlabel", "36001", False, [])
    assert ours.value.code == san.FOREIGN and "the pair's own filesystem (UUID uuid-pair)" in str(ours.value)
    with pytest.raises(san.SanError) as ours:
        san.do_mkfs(conf, "xfs", "bluemind_ha", "36001", False, [])
    assert ours.value.code == san.FOREIGN
    holder["value"] = (0x2, "Write Exclusive, registrants only")
    found[0] = {"type": "xfs", "label": "olddata", "offset": "0x0", "uuid": "uuid-old"}
    with pytest.raises(san.SanError) as reserved:
        san.do_mkfs(conf, "ext4", "bluemind_ha", "36001", False, [])
    assert reserved.value.code == san.FOREIGN and "reserved by node2" in str(reserved.value)
    found.clear()
    with pytest.raises(san.SanError) as reserved:
        san.do_mkfs(conf, "ext4", "bluemind_ha", "", False, [])
    assert "reserved by node2" in str(reserved.value)
    assert not any(c[0] in ("mkfs.ext4", "mkfs.xfs") or c[:2] == ["wipefs", "--all"] for c in calls)


def test_usage_errors_give_exit_2(san, tmp_path, capsys):
    assert san.main(["frobnicate"]) == san.USAGE
    assert san.main(["--config", str(tmp_path / "missing.json"), "holder"]) == san.USAGE
    assert "claim" in (san.main(["--help"]) == 0 and capsys.readouterr().out)


def test_ipv6_portals_are_bracketed_for_iscsiadm(san):
    assert san.portal_arg("10.60.1.10", 3260) == "10.60.1.10:3260"
    assert san.portal_arg("fd00:61::10", 3260) == "[fd00:61::10]:3260"
    # and read back without brackets, so a configured portal matches its record
    assert san.parse_iscsiadm_records(san.portal_arg("fd00:61::10", 3260) + ",1 iqn.x:y\n") == [("fd00:61::10", "iqn.x:y")]


def test_a_map_without_a_usable_path_is_exit_3_not_a_failure(san, array, monkeypatch):
    dead = san.parse_paths("bluemind sda failed faulty offline\n", "bluemind")
    monkeypatch.setattr(san.Lun, "paths", lambda self: dead)
    with pytest.raises(san.SanError) as no_path:
        san.do_claim(lun(san, array, "node1"))
    assert no_path.value.code == san.NO_DEVICE and array.holder is None


def test_map_reconfigures_on_a_changed_file_even_when_the_map_looks_current(san, monkeypatch):
    calls = []
    wwids = {"text": ""}
    monkeypatch.setattr(san, "run", lambda argv, check=True, stdin=None: calls.append(argv) or
                        subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(san.Lun, "present", lambda self: True)
    monkeypatch.setattr(san, "status", lambda lun: {"active_paths": 2, "paths": []})
    monkeypatch.setattr(san, "map_is_current", lambda conf: True)
    monkeypatch.setattr(san.os.path, "exists", lambda path: True)
    monkeypatch.setattr("builtins.open", lambda *a, **k: __import__("io").StringIO(wwids["text"]))
    conf = {"node": "node1", "alias": "bluemind", "device": "/dev/mapper/bluemind", "wwid": "36001",
            "key": "0x1", "keys": {"node1": "0x1"}}
    assert san.do_map(conf, 2, 5)["changed"] is True  # a new WWID: added, then reconfigured
    assert ["multipath", "-a", "36001"] in calls and ["multipathd", "reconfigure"] in calls
    wwids["text"] = "/36001/\n"
    calls.clear()
    assert san.do_map(conf, 2, 5)["changed"] is False and not calls
    assert san.do_map(conf, 2, 5, reconfigure=True)["changed"] is True
    assert calls == [["multipathd", "reconfigure"]]


def test_a_node_preempted_while_stopping_registers_again_when_it_releases(san, array):
    # node1 active; its keepalived stops, and node2's takeover preempts node1's key
    # while node1 still has the filesystem mounted (stopping BlueMind).
    san.do_register(lun(san, array, "node2"))
    san.do_claim(lun(san, array, "node1"))
    array.mounted.add("node1")
    san.do_claim(lun(san, array, "node2"))
    assert "node1" not in array.registered
    # Still mounted: release neither releases (not the holder) nor registers.
    assert san.do_release(lun(san, array, "node1")) is False
    assert "node1" not in array.registered
    # Unmounted: the node is a registered passive again; the holder is untouched.
    array.mounted.clear()
    assert san.do_release(lun(san, array, "node1")) is True
    assert array.registered["node1"] == 0x1111 and array.holder[0] == "node2"
    assert san.do_release(lun(san, array, "node1")) is False
