"""The node library the four programs share: bounded commands, the journal and
standard error, configurations that must be complete, markers that are never
half-written, mountinfo, signatures, /proc/drbd, and the command line; and each
role's configuration template renders every key its program requires."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "roles" / "node" / "files" / "bluemind_ha_node.py"
PROGRAMS = {
    "controller": ("bluemind_ha.py", "controller.json.j2"),
    "san": ("bluemind_ha_san.py", "san.json.j2"),
    "drbd": ("bluemind_ha_drbd.py", "drbd.json.j2"),
    "fencing": ("bluemind_ha_fence.py", "fence.json.j2"),
}
# A DRBD 8.4 node during a resync (drbd-utils 9.22 on Debian 12, kernel module 8.4.11).
PROC_DRBD = """version: 8.4.11 (api:1/proto:86-101)
srcversion: 211FB288A383ED945B83420
 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
    ns:524288 nr:0 dw:0 dr:526400 al:8 bm:0 lo:0 pe:2 ua:0 ap:0 ep:1 wo:f oos:1572864
\t[====>...............] sync'ed: 25.1% (1536/2047)M
\tfinish: 0:00:42 speed: 36,480 (36,480) K/sec
 1: cs:Unconfigured
"""
MOUNTINFO = """22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
61 22 147:0 / /srv/bluemind\\040ha rw,noatime shared:30 - ext4 /dev/drbd0 rw
62 22 147:0 /data/var/spool/cyrus /var/spool/cyrus rw,noatime shared:30 - ext4 /dev/drbd0 rw
"""


@pytest.fixture()
def node(monkeypatch, load_program):
    return load_program(SOURCE)


class Failure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def test_a_command_that_overruns_is_stopped_and_named(node):
    with pytest.raises(node.NodeError) as failed:
        node.run([sys.executable, "-c", "import time; time.sleep(5)"], 0.2)
    assert failed.value.code == node.FAILED
    assert "did not finish within 0.2 s" in str(failed.value)


def test_a_failing_command_names_itself_its_exit_code_and_the_end_of_its_output(node):
    with pytest.raises(Failure) as failed:
        node.run(["sh", "-c", "echo first >&2; echo last words >&2; exit 3", "sh", "more"], 5,
                 error=Failure, words=3, tail=10)
    assert str(failed.value) == "sh -c echo first >&2; echo last words >&2; exit 3 failed (exit 3): last words"
    assert failed.value.code == node.FAILED


def test_a_command_runs_with_its_input_and_unchecked_returns_its_result(node):
    proc = node.run(["sh", "-c", "cat; exit 4"], 5, check=False, stdin="fed\n")
    assert (proc.returncode, proc.stdout) == (4, "fed\n")
    with pytest.raises(node.NodeError, match="cannot run /nonexistent/tool"):
        node.run(["/nonexistent/tool"], 5)


def test_a_configuration_lacking_keys_names_the_file_and_the_keys(node, tmp_path):
    path = tmp_path / "conf.json"
    path.write_text(json.dumps({"node": "node1"}))
    with pytest.raises(Failure) as failed:
        node.load(str(path), ("node", "peer", "device"), Failure)
    assert (failed.value.code, str(failed.value)) == (node.USAGE, f"{path} lacks peer, device")
    assert node.load(str(path), ("node",)) == {"node": "node1"}
    path.write_text("{not json")
    with pytest.raises(node.NodeError, match="cannot read"):
        node.load(str(path), ())


def test_markers_are_replaced_whole_read_back_and_removed(node, tmp_path):
    directory = tmp_path / "run"
    node.write_marker(str(directory), "active", {"node": "node1"})
    node.write_marker(str(directory), "active", {"node": "node2"})
    assert node.read_marker(str(directory), "active") == {"node": "node2"}
    assert sorted(p.name for p in directory.iterdir()) == ["active"]  # no temporary file left
    assert oct(directory.stat().st_mode & 0o777) == "0o755"
    assert oct((directory / "active").stat().st_mode & 0o777) == "0o644"
    (directory / "broken").write_text("{")
    assert node.read_marker(str(directory), "broken") is None
    node.remove_marker(str(directory), "active")
    node.remove_marker(str(directory), "active")
    assert node.read_marker(str(directory), "active") is None


def test_mountinfo_unescapes_a_space_and_keeps_the_mount_order(node, tmp_path):
    mounts = node.parse_mountinfo(MOUNTINFO)
    assert [m["target"] for m in mounts] == ["/", "/srv/bluemind ha", "/var/spool/cyrus"]
    assert mounts[1] == {"device": (147, 0), "root": "/", "target": "/srv/bluemind ha", "source": "/dev/drbd0"}
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    assert node.read_mountinfo(str(path)) == mounts


def test_signatures_join_wipefs_and_blkid_without_duplicates(node):
    answers = {
        "wipefs": json.dumps({"signatures": [{"device": "vdb", "offset": "0x438", "type": "ext4",
                                              "uuid": "x", "label": "bluemind_ha"}]}),
        "blkid": "DEVNAME=/dev/vdb\nPTTYPE=gpt\n",
    }
    calls = []

    def run_unchecked(argv):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, answers[argv[0]], "")

    assert node.signatures("/dev/vdb", run_unchecked) == [
        {"type": "ext4", "label": "bluemind_ha", "offset": "0x438", "uuid": "x"},
        {"type": "gpt", "label": None, "offset": None, "uuid": None}]
    assert calls == [["wipefs", "--json", "/dev/vdb"], ["blkid", "-p", "-o", "export", "/dev/vdb"]]
    answers.update(wipefs="", blkid="TYPE=ext4\nUUID=u-1\n")
    assert node.signatures("/dev/vdb", run_unchecked) == [{"type": "ext4", "label": None, "offset": None,
                                                           "uuid": "u-1"}]


def test_a_disk_is_named_by_its_wwn_and_serial_never_by_its_path(node):
    """The udev properties ha_node_info reads for the same disk, in the same
    order: preflight's message and the wipe command name a disk alike."""
    answer = {"rc": 0, "out": "DEVNAME=/dev/sdb\nID_BUS=ata\nID_SERIAL=ST2000_ZA1\nID_SERIAL_SHORT=ZA1\n"
                              "ID_WWN=0x5000c500a1b2c3d4\nID_WWN_WITH_EXTENSION=0x5000c500a1b2c3d4\n"}

    def run_unchecked(argv):
        assert argv == ["udevadm", "info", "--query=property", "--name", "/dev/vdb"]
        return subprocess.CompletedProcess(argv, answer["rc"], answer["out"], "")

    identity = node.device_identity("/dev/vdb", run_unchecked)
    assert identity == {"wwn": "0x5000c500a1b2c3d4", "serial": "ZA1", "names": ["0x5000c500a1b2c3d4", "ZA1"]}
    assert node.confirms("0x5000C500A1B2C3D4", identity["names"]) and node.confirms(" za1", identity["names"])
    assert not node.confirms("/dev/vdb", identity["names"]) and not node.confirms("", identity["names"])
    assert not node.confirms(None, identity["names"])
    assert node.confirms("other-disk, za1", identity["names"]) and not node.confirms("za,1", identity["names"])
    answer.update(out="DEVNAME=/dev/vdb\nID_SERIAL=drbd\n")
    assert node.device_identity("/dev/vdb", run_unchecked)["names"] == ["drbd"]
    answer.update(out="DEVNAME=/dev/vdb\n")
    assert node.device_identity("/dev/vdb", run_unchecked)["names"] == []
    answer.update(rc=1, out="")
    assert node.device_identity("/dev/vdb", run_unchecked) == {"wwn": None, "serial": None, "names": []}


def test_proc_drbd_of_a_resync(node, tmp_path):
    assert node.parse_proc_drbd(PROC_DRBD, 0) == {
        "connection": "SyncSource", "role": "Primary", "peer_role": "Secondary", "disk": "UpToDate",
        "peer_disk": "Inconsistent", "io_suspended": False, "sync_percent": 25.1, "sync_kib_per_s": 36480,
        "sync_eta_s": 42}
    assert node.parse_proc_drbd(PROC_DRBD, 1) == {}
    path = tmp_path / "drbd"
    path.write_text(PROC_DRBD)
    assert node.read_proc_drbd("0", str(path))["disk"] == "UpToDate"
    assert node.read_proc_drbd(0, str(tmp_path / "no-module")) is None


@pytest.mark.parametrize("argv,expected", [
    (["--help"], 0), (["status", "-h"], 0), ([], 2), (["explode"], 2), (["--config", "/x"], 2),
    (["--config", "/x", "status", "--json"], ("/x", "status", ["--json"])),
    (["status"], ("/etc/prog.json", "status", [])),
])
def test_the_command_line(node, monkeypatch, capsys, argv, expected):
    opened = []
    monkeypatch.setattr(node.syslog, "openlog", lambda *a: opened.append(a))
    assert node.start(argv, "prog", "prog - does things", ("status", "run"), "/etc/prog.json") == expected
    out, err = capsys.readouterr()
    assert (out == "prog - does things\n") == (expected == 0)
    assert (err == "usage: prog [--config FILE] status|run (--help for more)\n") == (expected == 2)
    assert opened == [("prog", node.syslog.LOG_PID, node.syslog.LOG_DAEMON)]


def test_a_command_that_takes_no_arguments_refuses_them(node, monkeypatch):
    monkeypatch.setattr(node.syslog, "openlog", lambda *a: None)
    assert node.start(["run", "now"], "prog", "", ("run",), "/c", extra=False) == node.USAGE
    assert node.start(["run"], "prog", "", ("run",), "/c", extra=False) == ("/c", "run", [])


def test_log_reaches_stderr_unless_stderr_is_the_journal(node, monkeypatch, tmp_path):
    sent = []
    monkeypatch.setattr(node.syslog, "syslog", lambda priority, message: sent.append((priority, message)))
    stream = tmp_path / "stderr"
    with open(stream, "w", encoding="utf-8") as handle:
        monkeypatch.setattr(node.sys, "stderr", handle)
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        node.log("one", node.syslog.LOG_ERR)
        info = stream.stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        node.log("two")
    assert stream.read_text() == "one\n"
    assert sent == [(node.syslog.LOG_ERR, "one"), (node.syslog.LOG_NOTICE, "two")]


def test_the_library_imports_nothing_heavy():
    """keepalived's check imports it every few seconds: no urllib, smtplib, email."""
    code = ("import sys; before = set(sys.modules); import bluemind_ha_node; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = subprocess.run([sys.executable, "-S", "-c", code], cwd=SOURCE.parent, capture_output=True, text=True,
                            check=True).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("urllib", "smtplib", "email", "http", "ssl")], loaded


@pytest.mark.parametrize("role", sorted(PROGRAMS))
def test_each_template_renders_every_key_its_program_requires(role, load_program):
    program, template = PROGRAMS[role]
    module = load_program(ROOT / "roles" / role / "files" / program)
    rendered = set(re.findall(r'^\s*"(\w+)":', (ROOT / "roles" / role / "templates" / template).read_text(), re.M))
    assert not set(module.REQUIRED) - rendered


@pytest.mark.parametrize("role", sorted(PROGRAMS))
def test_each_program_keeps_its_own_error_class_and_exit_codes(role, load_program):
    program, _template = PROGRAMS[role]
    module = load_program(ROOT / "roles" / role / "files" / program)
    error = next(getattr(module, n) for n in ("HaError", "SanError", "DrbdError", "FenceError") if hasattr(module, n))
    assert issubclass(error, module.nodelib.NodeError) and error is not module.nodelib.NodeError
    assert (module.OK, module.FAILED, module.USAGE) == (0, 1, 2)
