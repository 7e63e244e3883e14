"""The failover controller's decisions against a simulated node (FakeNode: the
mount table, the units, the storage command, BlueMind's state endpoint): the
order of the steps, idempotence, migration that never overwrites, escalation of a
busy unmount, health in each role, and alerts that cannot block a failover."""
import http.server
import json
import os
import time
import subprocess
import threading
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "roles" / "controller" / "files" / "bluemind_ha.py"
REAL_RUN = subprocess.run  # the fixture replaces subprocess.run (one module object for all)
UNITS = ["postgresql.service", "bluemind.target", "bm-nginx.service", "postfix.service"]


class FakeNode:
    """Stands in for the node's commands: records each one, keeps a mount table
    and unit states, answers like mount, umount, systemctl and the storage commands."""

    def __init__(self, tmp_path):
        self.commands = []
        self.table = [("/", "/", "/dev/vda1")]
        self.active_units = set()
        self.failed_units = set()
        self.installed_units = set(UNITS) | {"bm-core.service"}
        self.claim_rc = 0
        self.release_rc = 0
        self.busy = set()
        self.unmounted_by_other = set()
        self.state = "CORE_STATE_RUNNING"
        self.manager = "running"  # systemctl is-system-running
        self.tmp = tmp_path

    def run(self, argv, timeout, check=True):
        self.commands.append(list(argv))
        rc, out, err = 0, "", ""
        if argv[0] == "mount" and argv[1] == "--bind":
            self.table.append((argv[3], argv[2], "bind"))
        elif argv[0] == "mount":
            self.table.append((argv[-1], "/", argv[-2]))
        elif argv[0] == "umount":
            if argv[1] in self.unmounted_by_other:
                # Another unmounted it just before this call (systemd at shutdown).
                self.table = [m for m in self.table if m[0] != argv[1]]
                rc, err = 32, f"umount: {argv[1]}: not mounted."
            elif argv[1] in self.busy:
                rc, err = 32, "target is busy"
            else:
                self.table = [m for m in self.table if m[0] != argv[1]]
        elif argv[0] == "systemctl" and argv[1] == "start":
            self.active_units.add(argv[2])
        elif argv[0] == "systemctl" and argv[1] == "stop":
            self.active_units.discard(argv[2])
        elif argv[0] == "systemctl" and argv[1] == "list-units" and "--state=failed" in argv:
            out = "".join(f"{u} loaded failed failed x\n" for u in sorted(self.failed_units))
        elif argv[0] == "systemctl" and argv[1] == "list-units":
            out = "".join(f"{u} loaded active running x\n" for u in sorted(self.active_units) if u.startswith("bm-"))
        elif argv[:2] == ["systemctl", "is-system-running"]:
            out, rc = self.manager + "\n", 0 if self.manager == "running" else 1
        elif argv[0] == "systemctl" and argv[1] == "reset-failed":
            self.failed_units -= set(argv[argv.index("--") + 1:])
        elif argv[0].startswith("bluemind-ha-") and argv[1] in ("promote", "claim"):
            rc = self.claim_rc
            out = json.dumps({"changed": True}) if rc == 0 else ""
            err = "" if rc == 0 else "refusing to promote: the local disk is Outdated"
        elif argv[0].startswith("bluemind-ha-") and argv[1] in ("demote", "release"):
            rc = self.release_rc
            out = json.dumps({"changed": True}) if rc == 0 else ""
            err = "" if rc == 0 else "/dev/mapper/bluemind has no usable path"
            if rc:
                return subprocess.CompletedProcess(argv, rc, out, err)
        elif argv[0].startswith("bluemind-ha-") and argv[1] == "status":
            out = json.dumps({"role": "Primary", "disk": "UpToDate"})
        if check and rc != 0:
            raise self.module.HaError(1, f"{argv} failed: {err}")
        return subprocess.CompletedProcess(argv, rc, out, err)

    def subprocess_run(self, argv, **kwargs):
        if argv[:2] == ["systemctl", "show"] and "--" in argv:
            blocks = []
            for unit in argv[argv.index("--") + 1:]:
                loaded = unit in self.installed_units
                state = "failed" if unit in self.failed_units else "active" if unit in self.active_units else "inactive"
                blocks.append(f"Id={unit}\nLoadState={'loaded' if loaded else 'not-found'}\nActiveState={state}\n")
            return subprocess.CompletedProcess(argv, 0, "\n".join(blocks), "")
        if argv[:2] == ["systemctl", "show"]:
            return subprocess.CompletedProcess(argv, 0, "loaded\n" if argv[-1] in self.installed_units else "not-found\n", "")
        if argv[:2] == ["systemctl", "is-active"]:
            unit = argv[-1]
            running = unit in self.active_units
            return subprocess.CompletedProcess(argv, 0 if running else 3, "active\n" if running else "inactive\n", "")
        raise AssertionError(f"unexpected command {argv}")

    def mounts(self, *_args):
        return list(self.table)


@pytest.fixture()
def node(tmp_path, monkeypatch, load_program):
    module = load_program(SOURCE)
    fake = FakeNode(tmp_path)
    fake.module = module
    monkeypatch.setattr(module, "RUN", str(tmp_path / "run"))
    monkeypatch.setattr(module, "HISTORY", str(tmp_path / "lib" / "transitions.jsonl"))
    monkeypatch.setattr(module, "VERDICT", str(tmp_path / "run" / "health" / "verdict"))
    monkeypatch.setattr(module, "run", fake.run)
    monkeypatch.setattr(module.subprocess, "run", fake.subprocess_run)
    monkeypatch.setattr(module, "mounts", fake.mounts)
    monkeypatch.setattr(module, "bluemind_state", lambda conf, timeout=5: fake.state)
    monkeypatch.setattr(module.time, "sleep", lambda s: None)
    fake.conf = module.load(write_conf(tmp_path))
    return module, fake


# Every key the role renders (roles/controller/templates/controller.json.j2), with
# the role's defaults unless a test needs otherwise.
COMPLETE = {"node": "node1", "peer": "node2", "storage": "drbd", "device": "/dev/drbd0", "fstype": "ext4",
            "mount_options": "noatime", "units_before": ["postgresql.service"], "target": "bluemind.target",
            "units_after": ["bm-nginx.service", "postfix.service"],
            "state_url": "http://127.0.0.1:8090/api/system/installation/state", "checks": [], "storage_grace": 30,
            "claim_timeout": 300, "step_timeout": 120, "start_timeout": 900, "stop_timeout": 300,
            "lock_timeout": 900, "unmount_attempts": 3, "reboot_if_stuck": True, "history_size": 200}


def write_conf(tmp_path, **override):
    local = tmp_path / "local"
    conf = dict(COMPLETE, mountpoint=str(tmp_path / "ha"),
                paths=[str(local / "var/spool/cyrus"), str(local / "etc/bm")],
                alert_file=str(tmp_path / "alert.json"), start_timeout=5, lock_timeout=0.2)
    conf.update(override)
    path = tmp_path / "controller.json"
    path.write_text(json.dumps(conf))
    return str(path)


def kinds(commands):
    """The commands, shortened to what the order tests compare."""
    out = []
    for argv in commands:
        if argv[0] == "mount":
            out.append(("bind", argv[3].rsplit("/", 1)[-1]) if argv[1] == "--bind" else ("mount", argv[-2]))
        elif argv[0] == "umount":
            out.append(("umount", argv[1].rsplit("/", 1)[-1]))
        elif argv[0] == "systemctl" and argv[1] in ("start", "stop"):
            out.append((argv[1], argv[2]))
        elif argv[0].startswith("bluemind-ha-"):
            out.append((argv[1],))
    return out


def test_activate_claims_mounts_exposes_then_starts_in_the_vendors_order(node):
    module, fake = node
    assert module.activate(fake.conf, "test") == module.OK
    assert kinds(fake.commands) == [("promote",), ("mount", "/dev/drbd0"), ("bind", "cyrus"), ("bind", "bm")] + [
        ("start", u) for u in UNITS]
    active = json.loads((fake.tmp / "run" / "active").read_text())
    assert active["node"] == "node1" and active["installed"] is True
    assert (fake.tmp / "ha" / ".bluemind-ha" / "installed").exists()
    entry = json.loads((fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines()[-1])
    assert entry["transition"] == "activate" and entry["outcome"] == "ok"
    assert [s["step"] for s in entry["steps"]] == ["claim", "mount", "expose", "mark", "start", "ready"]
    assert not (fake.tmp / "run" / "activating").exists()


def test_a_second_activate_changes_nothing_and_records_nothing(node):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.commands.clear()
    history = (fake.tmp / "lib" / "transitions.jsonl").read_text()
    fake.claim_rc = 0
    fake.run = fake.run  # same node, everything already in place
    module.run = lambda argv, timeout, check=True: fake.run(argv, timeout, check) if argv[1] != "promote" else \
        subprocess.CompletedProcess(argv, 0, json.dumps({"changed": False}), "")
    assert module.activate(fake.conf, "again") == module.OK
    assert kinds(fake.commands) == []
    assert (fake.tmp / "lib" / "transitions.jsonl").read_text() == history


def test_migration_copies_local_data_once_and_never_overwrites_the_ha_copy(node):
    module, fake = node
    cyrus = Path(fake.conf["paths"][0])
    cyrus.mkdir(parents=True)
    (cyrus / "mail").write_text("from node1's package install")
    module.run = lambda argv, timeout, check=True: (REAL_RUN(argv, check=True, capture_output=True)
                                                    if argv[0] in ("cp", "rm") else fake.run(argv, timeout, check))
    assert module.expose(fake.conf) is True
    ha_copy = Path(module.data_path(fake.conf, str(cyrus)))
    assert (ha_copy / "mail").read_text() == "from node1's package install"
    assert Path(module.data_path(fake.conf, fake.conf["paths"][1])).is_dir()  # absent here: created empty
    # The other node's local copy differs: the HA copy wins, untouched.
    (cyrus / "mail").write_text("node2's local leftovers")
    fake.table = [m for m in fake.table if m[2] != "bind"]
    module.expose(fake.conf)
    assert (ha_copy / "mail").read_text() == "from node1's package install"
    assert not list(ha_copy.parent.glob("*.migrating"))


def test_a_refused_claim_mounts_nothing_and_alerts(node, tmp_path):
    module, fake = node
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.handle_request, daemon=True).start()
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": f"http://127.0.0.1:{server.server_port}/hook"}))
    fake.claim_rc = 3
    assert module.activate(fake.conf, "vrrp") == module.STORAGE
    assert kinds(fake.commands) == [("promote",)]
    assert not (fake.tmp / "run" / "active").exists()
    server.server_close()
    assert received and received[0]["transition"] == "activate" and received[0]["outcome"] == "failed"
    assert "Outdated" in received[0]["error"] and received[0]["steps"][0]["step"] == "claim"


def test_a_peer_still_primary_is_waited_for_until_it_hands_over(node):
    module, fake = node
    answers = iter([4, 4, 0])
    real = fake.run

    def run(argv, timeout, check=True):
        if argv[1] == "promote":
            fake.commands.append(list(argv))
            rc = next(answers)
            return subprocess.CompletedProcess(argv, rc, json.dumps({"changed": True}) if rc == 0 else "", "")
        return real(argv, timeout, check)
    module.run = run
    assert module.activate(fake.conf, "vrrp") == module.OK
    assert [c for c in fake.commands if c[1] == "promote"] == [["bluemind-ha-drbd", "promote"]] * 3


def test_an_unreachable_webhook_or_relay_does_not_fail_the_transition(node, tmp_path):
    module, fake = node
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": "http://127.0.0.1:9/hook", "smtp_host": "127.0.0.1",
                                                     "smtp_port": 9, "email_to": ["admin@example.org"], "timeout": 1}))
    assert module.activate(fake.conf, "test") == module.OK


def test_deactivate_unguards_first_stops_in_reverse_unmounts_newest_first_then_releases(node):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.commands.clear()
    assert module.deactivate(fake.conf, "test") == module.OK
    assert not (fake.tmp / "run" / "active").exists()
    assert kinds(fake.commands) == [("stop", u) for u in reversed(UNITS)] + [
        ("umount", "bm"), ("umount", "cyrus"), ("umount", "ha"), ("demote",)]
    fake.commands.clear()
    assert module.deactivate(fake.conf, "again") == module.OK
    assert kinds(fake.commands) == [("demote",)]  # the storage command is idempotent itself


def test_a_busy_filesystem_is_freed_and_a_stuck_one_reboots_the_node(node):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.busy = {fake.conf["paths"][0]}
    fake.commands.clear()
    assert module.deactivate(fake.conf, "test") == module.FAILED
    fusers = [c for c in fake.commands if c[0] == "fuser"]
    assert len(fusers) == 2 * fake.conf["unmount_attempts"]
    assert ["systemctl", "reboot", "--force", "--force"] in fake.commands
    assert not any(c[0].startswith("bluemind-ha-") for c in fake.commands), "released storage still mounted"


def test_a_filesystem_unmounted_by_another_meanwhile_is_not_a_failure(node):
    """At shutdown systemd unmounts alongside the shutdown unit's deactivation: a
    umount that fails because the path is no longer mounted is done, not stuck."""
    module, fake = node
    module.activate(fake.conf, "test")
    fake.unmounted_by_other = {fake.conf["paths"][0]}
    fake.commands.clear()
    assert module.deactivate(fake.conf, "test") == module.OK
    assert not any(c[0] == "fuser" for c in fake.commands)
    assert ["systemctl", "reboot", "--force", "--force"] not in fake.commands


def test_without_fuser_a_busy_filesystem_still_ends_in_the_last_resort(node, monkeypatch):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.busy = {fake.conf["paths"][0]}
    fake.commands.clear()
    fake_run = module.run

    def no_fuser(argv, timeout, check=True):
        if argv[0] == "fuser":
            fake.commands.append(list(argv))
            raise module.HaError(module.FAILED, "cannot run fuser: [Errno 2] No such file or directory: 'fuser'")
        return fake_run(argv, timeout, check)

    monkeypatch.setattr(module, "run", no_fuser)
    assert module.deactivate(fake.conf, "test") == module.FAILED
    assert len([c for c in fake.commands if c[0] == "fuser"]) == 2 * fake.conf["unmount_attempts"]
    assert ["systemctl", "reboot", "--force", "--force"] in fake.commands
    assert not any(c[0].startswith("bluemind-ha-") for c in fake.commands), "released storage still mounted"


@pytest.mark.parametrize("setup,expected", [
    ({"drain": True}, 1),
    ({"activating": True}, 0),
    ({"active": {"installed": True}, "state": "CORE_STATE_RUNNING"}, 0),
    ({"active": {"installed": True}, "state": "CORE_STATE_NOT_INSTALLED"}, 1),
    ({"active": {"installed": False}, "state": "CORE_STATE_NOT_INSTALLED"}, 0),
    ({"active": {"installed": True}, "state": None}, 1),
    ({"active": {"installed": True}, "state": "CORE_STATE_RUNNING", "failed": "bm-nginx.service"}, 1),
    ({"vrrp": "MASTER"}, 1),
    ({"vrrp": "BACKUP", "disk": "UpToDate"}, 0),
    ({"vrrp": "BACKUP", "disk": "Outdated"}, 1),
], ids=["drained", "activating", "active running", "active, installed data lost", "active, never set up",
        "active, no answer", "active, bm-nginx failed", "master not active", "passive up to date", "passive outdated"])
def test_health_in_each_role(node, monkeypatch, setup, expected):
    module, fake = node
    run = fake.tmp / "run"
    run.mkdir()
    if setup.get("drain"):
        (run / "drain").write_text("")
    if setup.get("activating"):
        module.write_marker("activating", {"since": module.time.time(), "timeout": 60})
    if "active" in setup:
        module.write_marker("active", setup["active"])
        fake.active_units = set(UNITS) - {setup.get("failed")}
        fake.failed_units = {setup.get("failed")}
    fake.state = setup.get("state")
    (run / "vrrp-state").write_text(f"{setup.get('vrrp', 'BACKUP')} 0\n")
    monkeypatch.setattr(module, "read_proc_drbd_disk", lambda conf: setup.get("disk", "UpToDate"))
    code, why = module.health(fake.conf)
    assert code == expected, why


def test_notify_hands_over_to_the_units_without_waiting(node):
    module, fake = node
    module.notify(fake.conf, "MASTER")
    # Between the notify and the activation's start, the health check of this
    # new master must not fail (it would send the node to FAULT).
    (Path(module.RUN) / "vrrp-state").write_text("MASTER 0\n")
    assert module.health(fake.conf) == (module.OK, "activation in progress")
    module.notify(fake.conf, "FAULT")
    # The activation never ran (replaced by the deactivation): the deactivation
    # withdraws its announcement, so a master that is not active fails again.
    assert module.deactivate(fake.conf, "test") == module.OK
    assert module.health(fake.conf)[0] == module.FAILED
    assert fake.commands[:2] == [["systemctl", "start", "--no-block", "bluemind-ha-activate.service"],
                                 ["systemctl", "start", "--no-block", "bluemind-ha-deactivate.service"]]
    assert module.main(["--config", "/nonexistent", "notify", "MASTER"]) == module.USAGE


def test_a_transition_waits_for_the_lock_and_gives_up_bounded(node):
    module, fake = node
    holder = module.Transition(fake.conf, "activate", "first")
    holder.acquire()
    assert module.activate(fake.conf, "second") == module.BUSY
    assert fake.commands == []


def test_bluemind_that_never_becomes_ready_fails_the_activation(node):
    module, fake = node
    fake.state = "CORE_STATE_STARTING"
    fake.conf["start_timeout"] = 0.3
    assert module.activate(fake.conf, "test") == module.FAILED
    entry = json.loads((fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines()[-1])
    assert entry["outcome"] == "failed" and "CORE_STATE_STARTING" in entry["error"]


def test_status_reports_role_storage_units_and_transitions(node, monkeypatch):
    module, fake = node
    module.activate(fake.conf, "test")
    monkeypatch.setattr(module, "read_proc_drbd_disk", lambda conf: "UpToDate")
    report = module.status(fake.conf)
    assert report["role"] == "active" and report["mounted"] and len(report["exposed"]) == 2
    assert report["units"] == {u: "active" for u in UNITS}
    assert report["storage"]["role"] == "Primary" and report["transitions"][-1]["transition"] == "activate"
    assert "active (VRRP UNKNOWN), health ok" in module.human(report)
    # The fake storage reports no peer: this node sees no peer holding it.
    assert report["peer_view"]["node"] == fake.conf["peer"] and not report["peer_view"]["holds_storage"]
    assert "does not hold the storage" in module.human(report)
    # No watcher ran here: status says keepalived has no verdict to act on.
    assert report["verdict"]["stale"] and "verdict (bluemind-ha-health): none, never written, STALE" in module.human(report)
    health = Path(module.VERDICT).parent
    health.mkdir(parents=True, exist_ok=True)
    Path(module.VERDICT).write_text("1\n")
    Path(module.VERDICT + ".json").write_text(json.dumps({"ok": True, "why": "fine", "time": time.time() - 3,
                                                         "stale_after": 30}))
    assert "verdict (bluemind-ha-health): healthy, 3 s old\n" in module.human(module.status(fake.conf))


@pytest.mark.parametrize("status,body,expected", [
    (200, b'"CORE_STATE_RUNNING"', "CORE_STATE_RUNNING"),
    (503, b'"CORE_STATE_RUNNING"', None),
    (200, b"not json", None),
    (200, b'{"state": 1}', None),
])
def test_the_state_endpoint_is_read_without_urllib(load_program, status, body, expected):
    module = load_program(SOURCE)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            assert self.path == "/api/system/installation/state"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/system/installation/state"
        assert module.bluemind_state({"state_url": url}, timeout=5) == expected
    finally:
        server.shutdown()
        server.server_close()
    # Nobody listening: no answer, no exception.
    assert module.bluemind_state({"state_url": f"http://127.0.0.1:{server.server_port}/x"}, timeout=2) is None
    assert module.bluemind_state({"state_url": "https://127.0.0.1/x"}, timeout=2) is None


def test_a_unit_that_fails_after_its_start_fails_the_activation(node):
    """bm-core answers but bm-nginx (users' way in) died after systemctl start
    returned: the activation fails at once instead of reporting ready."""
    module, fake = node
    real_run = fake.run

    def start_then_crash(argv, timeout, check=True):
        result = real_run(argv, timeout, check)
        if argv[:3] == ["systemctl", "start", "bm-nginx.service"]:
            fake.active_units.discard("bm-nginx.service")
            fake.failed_units.add("bm-nginx.service")
        return result
    fake.module.run = start_then_crash
    assert module.activate(fake.conf, "test") == module.FAILED
    entry = json.loads((fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines()[-1])
    assert entry["outcome"] == "failed" and "bm-nginx.service failed" in entry["error"], entry


def test_log_goes_to_stderr_only_when_the_journal_does_not_have_it(load_program, monkeypatch, tmp_path):
    module = load_program(SOURCE)
    stream = tmp_path / "stderr"
    with open(stream, "w", encoding="utf-8") as handle:
        monkeypatch.setattr(module.sys, "stderr", handle)
        info = stream.stat()
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        module.log("on a terminal")
        # A program whose caller captures its stderr inherits the variable: it
        # names another stream, the caller must see the message.
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
        module.log("captured by the caller")
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        module.log("under systemd")
    assert stream.read_text() == "on a terminal\ncaptured by the caller\n"


@pytest.mark.parametrize("active,bluemind,expected", [
    (True, None, 0), (True, "CORE_STATE_UPGRADE", 0), (False, None, 1),
], ids=["active, BlueMind down", "active, upgrading", "passive"])
def test_a_suspension_keeps_the_active_node_and_stops_a_takeover(node, monkeypatch, active, bluemind, expected):
    module, fake = node
    if active:
        module.write_marker("active", {"installed": True})
    fake.state = bluemind
    monkeypatch.setattr(module, "read_proc_drbd_disk", lambda conf: "UpToDate")
    config = str(fake.tmp / "controller.json")
    assert module.main(["--config", config, "suspend", "--reason", "upgrade"]) == module.OK
    code, why = module.health(fake.conf)
    assert code == expected, why
    assert "suspended" in why
    assert module.status(fake.conf)["suspended"] is True
    assert module.main(["--config", config, "resume"]) == module.OK
    assert module.status(fake.conf)["suspended"] is False
    # Without the suspension the same node is judged on BlueMind (or its disk) again.
    assert module.health(fake.conf)[0] == (module.FAILED if active else module.OK)


def test_a_drain_fails_the_check_until_undrain(node, monkeypatch, capsys):
    module, fake = node
    monkeypatch.setattr(module, "read_proc_drbd_disk", lambda conf: "UpToDate")
    config = str(fake.tmp / "controller.json")
    assert module.health(fake.conf)[0] == module.OK
    assert module.main(["--config", config, "drain", "--reason", "switchover"]) == module.OK
    assert module.main(["--config", config, "drain"]) == module.OK
    assert capsys.readouterr().out.splitlines() == ["drain: set", "drain: already set"]
    assert module.read_marker("drain")["reason"] == "manual"
    assert module.health(fake.conf) == (module.FAILED, "drained by an operator")
    assert module.main(["--config", config, "undrain"]) == module.OK
    assert module.main(["--config", config, "undrain"]) == module.OK
    assert capsys.readouterr().out.splitlines() == ["drain: cleared", "drain: not set"]
    assert module.health(fake.conf)[0] == module.OK


def test_a_transition_records_its_wall_clock_bounds(node):
    module, fake = node
    before = module.time.time()
    assert module.activate(fake.conf, "test") == module.OK
    event = module.history(1)[-1]
    # Recorded to the millisecond: compare within that rounding.
    assert before - 0.001 <= event["started"] <= event["ended"] <= module.time.time() + 0.001


def san_node(node, tmp_path, paths, monkeypatch, **conf):
    """The node fixture as a SAN node, active, whose map has `paths` working paths;
    HEALTH_DIR in tmp_path."""
    module, fake = node
    fake.conf = module.load(write_conf(tmp_path, storage="san", device=str(tmp_path / "mapper-bluemind"), **conf))
    (tmp_path / "mapper-bluemind").write_text("")
    monkeypatch.setattr(module, "HEALTH_DIR", str(tmp_path / "health"))
    (tmp_path / "health").mkdir()
    monkeypatch.setattr(module, "running_paths", lambda conf: paths)
    return module, fake


def make_active(module, fake):
    module.write_marker("active", {"installed": True})
    fake.active_units = set(UNITS)
    fake.state = "CORE_STATE_RUNNING"


def test_running_paths_counts_the_maps_running_scsi_devices(load_program, tmp_path):
    module = load_program(SOURCE)
    sysfs = tmp_path / "sys" / "block"
    for slave, state in (("sda", "running"), ("sdb", "transport-offline"), ("sdc", "running")):
        (sysfs / "dm-3" / "slaves" / slave / "device").mkdir(parents=True)
        (sysfs / "dm-3" / "slaves" / slave / "device" / "state").write_text(state + "\n")
    (tmp_path / "dm-3").write_text("")
    (tmp_path / "bluemind").symlink_to(tmp_path / "dm-3")
    assert module.running_paths({"device": str(tmp_path / "bluemind")}, sysfs=str(sysfs)) == 2
    (sysfs / "dm-3" / "slaves" / "sdc" / "device" / "state").write_text("blocked\n")
    assert module.running_paths({"device": str(tmp_path / "bluemind")}, sysfs=str(sysfs)) == 1
    # The map gone: no path.
    assert module.running_paths({"device": str(tmp_path / "nothing")}, sysfs=str(sysfs)) == 0


def test_the_active_san_node_fails_only_after_the_queueing_grace_without_a_path(node, tmp_path, monkeypatch):
    module, fake = san_node(node, tmp_path, 0, monkeypatch, storage_grace=30)
    make_active(module, fake)
    clock = [1000.0]
    monkeypatch.setattr(module.time, "time", lambda: clock[0])
    code, why = module.health(fake.conf)
    assert code == module.OK, why
    clock[0] += 29
    code, why = module.health(fake.conf)
    assert code == module.OK and "no working path to the LUN for 29 s (grace 30 s)" in why, why
    clock[0] += 1
    code, why = module.health(fake.conf)
    assert code == module.FAILED and "no working path to the LUN for 30 s" in why, why
    # A path back: healthy again, and the next loss counts from zero.
    monkeypatch.setattr(module, "running_paths", lambda conf: 1)
    assert module.health(fake.conf)[0] == module.OK
    assert not (tmp_path / "health" / "pathless-since").exists()
    monkeypatch.setattr(module, "running_paths", lambda conf: 0)
    clock[0] += 100
    assert module.health(fake.conf)[0] == module.OK


def test_without_its_state_directory_the_check_reports_a_lost_path_at_once(node, tmp_path, monkeypatch):
    module, fake = san_node(node, tmp_path, 0, monkeypatch)
    make_active(module, fake)
    (tmp_path / "health").rmdir()
    code, why = module.health(fake.conf)
    assert code == module.FAILED and "no working path to the LUN" in why, why


@pytest.mark.parametrize("paths,expected", [(2, 0), (0, 1)])
def test_a_passive_san_node_is_ready_only_with_a_working_path(node, tmp_path, monkeypatch, paths, expected):
    module, fake = san_node(node, tmp_path, paths, monkeypatch)
    (fake.tmp / "run").mkdir(exist_ok=True)
    (fake.tmp / "run" / "vrrp-state").write_text("BACKUP 0\n")
    code, why = module.health(fake.conf)
    assert code == expected and f"{paths} working path(s)" in why, why


def test_a_drbd_node_does_not_look_for_san_paths(node, monkeypatch):
    module, fake = node
    make_active(module, fake)
    monkeypatch.setattr(module, "running_paths", lambda conf: pytest.fail("a DRBD node counted SAN paths"))
    assert module.health(fake.conf)[0] == module.OK


def as_san(module, fake, tmp_path, monkeypatch, paths=2):
    fake.conf = module.load(write_conf(tmp_path, storage="san", device="/dev/mapper/bluemind"))
    monkeypatch.setattr(module, "running_paths", lambda conf: paths)
    return fake.conf


def releases(fake):
    return [c for c in fake.commands if c[:1] == ["bluemind-ha-san"] and c[1] == "release"]


def test_a_release_without_a_path_is_left_pending_and_retried_once_a_path_is_usable(node, tmp_path, monkeypatch):
    """Issue 33's order: keepalived leaves FAULT for BACKUP as soon as a SCSI path
    runs, the BACKUP deactivation's release finds no path multipathd reinstated.
    The timer's retries stay quiet while the release cannot succeed, then finish it."""
    module, fake = node
    conf = as_san(module, fake, tmp_path, monkeypatch)
    pending = fake.tmp / "run" / "release-pending"
    fake.release_rc = 3
    assert module.deactivate(conf, "vrrp-not-master") == module.STORAGE
    assert json.loads(pending.read_text())["reason"] == "vrrp-not-master"
    assert module.status(conf)["release_pending"]["reason"] == "vrrp-not-master"
    history = (fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["outcome"] == "failed"
    # multipathd has not reinstated a path yet: retried, not recorded, still pending.
    fake.commands.clear()
    assert module.retry(conf) == module.OK
    assert len(releases(fake)) == 1 and pending.exists()
    assert (fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines() == history
    # A path is usable: the release (which registers the key again) is done and recorded.
    fake.release_rc = 0
    fake.failed_units = {"postgresql.service"}
    assert module.retry(conf) == module.OK
    assert not pending.exists() and fake.failed_units == set()
    reset = next(c for c in fake.commands if c[:2] == ["systemctl", "list-units"])
    assert "bluemind-ha-deactivate.service" in reset and "postgresql@*.service" in reset, reset
    entry = json.loads((fake.tmp / "lib" / "transitions.jsonl").read_text().splitlines()[-1])
    assert (entry["transition"], entry["outcome"]) == ("release-retry", "ok")
    assert [s["step"] for s in entry["steps"]] == ["release", "reset"]
    # Nothing pending any more: nothing is run.
    fake.commands.clear()
    assert module.retry(conf) == module.OK and fake.commands == []


def test_a_pending_release_waits_for_a_running_path_without_running_anything(node, tmp_path, monkeypatch):
    module, fake = node
    conf = as_san(module, fake, tmp_path, monkeypatch, paths=0)
    module.write_marker(module.PENDING, {"since": 1.0, "reason": "vrrp-not-master"})
    assert module.retry(conf) == module.OK
    assert fake.commands == [] and (fake.tmp / "run" / "release-pending").exists()


@pytest.mark.parametrize("state", ["active", "activating", "MASTER", "locked"])
def test_a_pending_release_is_not_retried_on_a_node_that_is_or_becomes_active(node, tmp_path, monkeypatch, state):
    module, fake = node
    conf = as_san(module, fake, tmp_path, monkeypatch)
    module.write_marker(module.PENDING, {"since": 1.0, "reason": "vrrp-not-master"})
    if state in ("active", "activating"):
        module.write_marker(state, {"node": "node1", "since": 1.0, "timeout": 600})
    elif state == "MASTER":
        (fake.tmp / "run" / "vrrp-state").write_text("MASTER 1\n")
    holder = module.Transition(conf, "activate", "test")
    if state == "locked":
        assert holder.acquire() is True
    assert module.retry(conf) == module.OK
    assert releases(fake) == [] and (fake.tmp / "run" / "release-pending").exists()


def test_an_activation_clears_a_pending_release_once_it_claimed(node, tmp_path, monkeypatch):
    module, fake = node
    conf = as_san(module, fake, tmp_path, monkeypatch)
    module.write_marker(module.PENDING, {"since": 1.0, "reason": "vrrp-not-master"})
    assert module.activate(conf, "vrrp-master") == module.OK
    assert not (fake.tmp / "run" / "release-pending").exists()
    module.deactivate(conf, "vrrp-not-master")
    assert not (fake.tmp / "run" / "release-pending").exists()


def test_deactivate_resets_units_that_failed_with_their_storage(node):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.active_units.discard("postgresql.service")
    fake.failed_units = {"postgresql.service"}
    assert module.deactivate(fake.conf, "test") == module.OK
    assert fake.failed_units == set()
    assert ["systemctl", "reset-failed", "--", "postgresql.service"] in fake.commands


def test_a_drbd_demote_that_fails_is_not_left_to_the_retry_timer(node):
    module, fake = node
    module.activate(fake.conf, "test")
    fake.release_rc = 1
    assert module.deactivate(fake.conf, "test") == module.STORAGE
    assert not (fake.tmp / "run" / "release-pending").exists()


# ---------------------------------------------------------------- monitoring (issue 31)

def report_of(role="active", vrrp="MASTER", health=True, storage=None, drained=False, suspended=False,
              pending=None, transitions=None, bluemind="CORE_STATE_RUNNING", verdict=None):
    return {"verdict": verdict or {"ok": health, "why": "", "age": 1.0, "stale": False},
            "node": "node1", "peer": "node2", "role": role, "vrrp": vrrp, "drained": drained,
            "suspended": suspended, "release_pending": pending,
            "storage": storage or {"method": "drbd", "role": "Primary", "disk": "UpToDate", "connection": "Connected"},
            "mounted": role == "active", "exposed": [], "units": {}, "bluemind": bluemind if role == "active" else None,
            "transitions": transitions if transitions is not None else [
                {"transition": "activate", "outcome": "ok", "seconds": 12.5, "ended": 1000.0}],
            "health": {"ok": health, "why": "fine" if health else "BlueMind answers CORE_STATE_STARTING"}}


# The keys of bluemind-ha-san status --json that the monitoring reads.
SAN_OK = {"method": "san", "paths": [{"dm_state": "active"}] * 2, "active_paths": 2, "registered": ["node1", "node2"],
          "registered_here": True, "holder": "node1"}


@pytest.mark.parametrize("report,code,words", [
    (report_of(), 0, ["BLUEMIND-HA OK", "node1 active (VRRP MASTER), BlueMind CORE_STATE_RUNNING: serving"]),
    (report_of(role="passive", vrrp="BACKUP"), 0, ["ready to take over"]),
    (report_of(health=False), 2, ["CRITICAL", "active but failing: BlueMind answers CORE_STATE_STARTING"]),
    (report_of(role="passive", vrrp="MASTER"), 2, ["CRITICAL", "VRRP master but not active"]),
    (report_of(role="activating", vrrp="MASTER"), 0, ["OK"]),
    (report_of(role="passive", vrrp="BACKUP", health=False), 1, ["WARNING", "cannot take over"]),
    (report_of(storage={"method": "drbd", "disk": "UpToDate", "connection": "StandAlone"}), 1,
     ["storage degraded", "connection StandAlone"]),
    (report_of(role="passive", vrrp="BACKUP", storage=dict(SAN_OK, registered_here=False)), 1,
     ["storage degraded", "registered_here False"]),
    (report_of(role="passive", vrrp="BACKUP", storage=dict(SAN_OK, active_paths=0)), 1,
     ["storage degraded", "active_paths 0"]),
    (report_of(role="passive", vrrp="FAULT", health=False, drained=True), 1, ["WARNING", "drained"]),
    (report_of(suspended=True), 1, ["automatic failover suspended"]),
    (report_of(role="passive", vrrp="BACKUP", storage=SAN_OK, pending={"reason": "x"}), 1,
     ["storage release pending"]),
    (report_of(transitions=[{"transition": "deactivate", "outcome": "failed", "seconds": 3,
                             "ended": time.time() - 60, "time": "2026-12-06T03:00:00+0000"}]), 1,
     ["last transition deactivate failed at 2026-12-06T03:00:00+0000"]),
    (report_of(verdict={"ok": True, "why": "fine", "age": 95.0, "stale": True}), 1,
     ["WARNING", "keepalived's health verdict is stale (95 s old)"]),
    (report_of(verdict={"ok": None, "why": "", "age": None, "stale": True}), 1, ["stale (never written)"]),
    # A day later the failed transition no longer warns: the node's state speaks.
    (report_of(transitions=[{"transition": "deactivate", "outcome": "failed", "seconds": 3,
                             "ended": time.time() - 90000}]), 0, ["serving"]),
])
def test_the_nagios_plugin_mode_follows_the_plugin_guidelines(load_program, report, code, words):
    module = load_program(SOURCE)
    got, line = module.nagios(report)
    assert got == code, line
    assert "\n" not in line and line.count(" | ") == 1
    for word in words:
        assert word in line, line
    perf = line.split(" | ")[1]
    assert f"active={int(report['role'] == 'active')};;;0;1" in perf and "last_transition_seconds=" in perf


def test_the_nagios_mode_is_unknown_without_a_configuration(load_program, tmp_path, capsys):
    module = load_program(SOURCE)
    assert module.main(["--config", str(tmp_path / "missing.json"), "status", "--nagios"]) == 3
    assert capsys.readouterr().out.startswith("BLUEMIND-HA UNKNOWN - ")


def test_the_prometheus_metrics_describe_the_node(load_program):
    module = load_program(SOURCE)
    text = module.prometheus(report_of(role="passive", vrrp="BACKUP", storage=SAN_OK), now=1060.4)
    lines = text.splitlines()
    samples = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines if not line.startswith("#")}
    assert samples['bluemind_ha_active{node="node1"}'] == "0"
    assert samples['bluemind_ha_role{node="node1",role="passive"}'] == "1"
    assert samples['bluemind_ha_role{node="node1",role="active"}'] == "0"
    assert samples['bluemind_ha_vrrp_state{node="node1",state="BACKUP"}'] == "1"
    assert samples['bluemind_ha_storage_ok{node="node1"}'] == "1"
    assert samples['bluemind_ha_verdict_ok{node="node1"}'] == "1"
    assert samples['bluemind_ha_verdict_stale{node="node1"}'] == "0"
    assert samples['bluemind_ha_san_paths{node="node1"}'] == "2"
    assert samples['bluemind_ha_info{node="node1",peer="node2",storage="san"}'] == "1"
    labels = 'node="node1",transition="activate",outcome="ok"'
    assert samples[f"bluemind_ha_last_transition_ok{{{labels}}}"] == "1"
    assert samples[f"bluemind_ha_seconds_since_last_transition{{{labels}}}"] == "60"
    assert samples['bluemind_ha_metrics_timestamp_seconds{node="node1"}'] == "1060.4"
    # Every series has its HELP and TYPE, once.
    names = {line.split("{")[0] for line in lines if not line.startswith("#")}
    for name in names:
        assert lines.count(f"# TYPE {name} gauge") == 1 and sum(x.startswith(f"# HELP {name} ") for x in lines) == 1


def test_the_metrics_file_is_replaced_atomically_and_readable(node, tmp_path, monkeypatch):
    module, fake = node
    module.activate(fake.conf, "test")
    monkeypatch.setattr(module, "read_proc_drbd_disk", lambda conf: "UpToDate")
    target = tmp_path / "textfile" / "bluemind_ha.prom"
    config = str(tmp_path / "local" / "controller.json")
    monkeypatch.setattr(module, "load", lambda path: fake.conf)
    assert module.main(["--config", config, "status", "--prometheus", "--output", str(target)]) == 0
    assert 'bluemind_ha_active{node="node1"} 1' in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["bluemind_ha.prom"]


# ---------------------------------------------------------------- the health watcher

@pytest.mark.parametrize("start,results,expected", [
    (None, [False], [False]),
    (None, [True, False, False], [True, True, False]),
    (True, [False, True, False, False, False], [True, True, True, False, False]),
    (False, [True, True], [False, True]),
    (False, [True, False, True, True], [False, False, False, True]),
], ids=["first check decides", "falls after two", "a pass resets the fall", "rises after two",
        "a failure resets the rise"])
def test_the_verdict_changes_only_after_fall_or_rise_checks_in_a_row(load_program, start, results, expected):
    module = load_program(SOURCE)
    verdict = module.Verdict(start, 2, 2)
    seen = []
    for passed in results:
        verdict.update(passed)
        seen.append(verdict.ok)
    assert seen == expected


def watch_in(module, tmp_path, results, existing=None, fall=2, rise=2):
    """Run the watcher for len(results) checks whose outcomes are results (True,
    False, or an exception to raise); the verdict file after each check."""
    verdict = tmp_path / "health" / "verdict"
    verdict.parent.mkdir(exist_ok=True)
    if existing is not None:
        verdict.write_text(existing)
    outcomes, seen = list(results), []

    def checks():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return (module.OK, "fine") if outcome else (module.FAILED, "not fine")

    def sleep(_seconds):
        seen.append(verdict.read_text())

    options = {"path": str(verdict), "interval": 1.0, "fall": fall, "rise": rise, "timeout": 30.0}
    assert module.watch(write_conf(tmp_path), options, checks=checks, sleep=sleep, rounds=len(results)) == module.OK
    seen.append(verdict.read_text())
    return verdict, seen


def test_the_watcher_writes_the_verdict_keepalived_reads_and_its_details(load_program, tmp_path):
    module = load_program(SOURCE)
    verdict, seen = watch_in(module, tmp_path, [True, False, False, True, True])
    assert seen == ["1\n", "1\n", "0\n", "0\n", "1\n"]
    details = json.loads(Path(f"{verdict}.json").read_text())
    assert details["ok"] is True and details["why"] == "fine" and details["stale_after"] == 30.0
    assert abs(details["time"] - time.time()) < 5
    report = module.verdict_report(str(verdict))
    assert report["ok"] is True and report["stale"] is False
    # A verdict not renewed within its bound is reported stale.
    assert module.verdict_report(str(verdict), now=details["time"] + 31)["stale"] is True


def test_the_watcher_carries_an_earlier_verdict_on(load_program, tmp_path):
    """A restarted watcher (new program, new unit) does not flip a healthy active
    node's verdict on one failed check: the file's verdict is where it starts."""
    module = load_program(SOURCE)
    _verdict, seen = watch_in(module, tmp_path, [False, True], existing="1\n")
    assert seen == ["1\n", "1\n"]
    _verdict, seen = watch_in(module, tmp_path, [True], existing="0\n")
    assert seen == ["0\n"]


def test_a_check_that_breaks_counts_as_failed(load_program, tmp_path):
    module = load_program(SOURCE)
    _verdict, seen = watch_in(module, tmp_path, [OSError("boom"), RuntimeError("bang")], existing="1\n")
    assert seen == ["1\n", "0\n"]


def test_the_watcher_tells_systemd_it_is_ready_and_alive(load_program, tmp_path, monkeypatch):
    import socket

    module = load_program(SOURCE)
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        watch_in(module, tmp_path, [True, True])
        messages = [sock.recv(4096).decode(), sock.recv(4096).decode()]
    assert all("READY=1" in m and "WATCHDOG=1" in m and "STATUS=healthy: fine" in m for m in messages)
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert module.sd_notify("WATCHDOG=1") is False


def test_the_watcher_exits_for_a_new_program_and_rereads_a_changed_configuration(load_program, tmp_path, monkeypatch):
    module = load_program(SOURCE)
    program = tmp_path / "bluemind_ha.py"
    program.write_text("# old\n")
    monkeypatch.setattr(module, "__file__", str(program))
    conf = write_conf(tmp_path)
    verdict = tmp_path / "verdict"
    options = {"path": str(verdict), "interval": 1.0, "fall": 1, "rise": 1, "timeout": 30.0}
    loaded = []
    monkeypatch.setattr(module, "load", lambda path: loaded.append(path) or {"storage": "drbd"})
    rounds = []

    def sleep(_seconds):
        rounds.append(1)
        if len(rounds) == 1:
            # A changed configuration: read again before the next check.
            Path(conf).write_text(Path(conf).read_text() + " ")
            os.utime(conf, (time.time() + 10, time.time() + 10))
        elif len(rounds) == 2:
            program.write_text("# new\n")
            os.utime(program, (time.time() + 10, time.time() + 10))
    assert module.watch(conf, options, checks=lambda: (module.OK, "fine"), sleep=sleep, rounds=10) == module.OK
    assert len(rounds) == 2 and loaded == [conf, conf]


@pytest.mark.parametrize("args,problem", [
    (["--interval", "1"], "a FILE"), (["--watch", "/v", "--interval", "0"], "interval above 0"),
    (["--watch", "/v", "--fall", "0"], "fall and rise"), (["--watch", "/v", "--timeout", "1"], "timeout above"),
    (["--watch", "/v", "--interval", "x"], "could not convert"), (["--watch"], "usage"), (["--every", "1"], "usage"),
])
def test_the_watchers_options_are_checked(load_program, args, problem):
    module = load_program(SOURCE)
    with pytest.raises(module.HaError) as error:
        module.watch_options(args)
    assert problem in str(error.value)
    assert module.watch_options(["--watch", "/v", "--interval", "2", "--timeout", "20"]) == {
        "path": "/v", "interval": 2.0, "fall": 2, "rise": 2, "timeout": 20.0}


def test_a_check_that_systemd_does_not_answer_is_a_failure(node, monkeypatch):
    module, fake = node

    def slow(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs.get("timeout"))
    monkeypatch.setattr(module.subprocess, "run", slow)
    assert module.units_down(fake.conf) == [f"systemd did not say within {module.UNITS_TIMEOUT} s"]


def test_a_fault_during_an_activation_lets_it_finish_then_hands_over(node, monkeypatch):
    """A busy survivor's own check (or uplink) sends it to FAULT while it activates:
    the activation is not stopped; once done, the node is not master, so the
    deactivation follows."""
    module, fake = node
    monkeypatch.setattr(module, "unit_state", lambda unit: "activating")
    assert module.notify(fake.conf, "FAULT") == module.OK
    assert fake.commands == []
    monkeypatch.setattr(module.signal, "signal", lambda *args: None)
    run = Path(module.RUN)
    run.mkdir(exist_ok=True)
    (run / "vrrp-state").write_text("FAULT 0\n")
    assert module.activate(fake.conf, "test") == module.OK
    assert fake.commands[-1] == ["systemctl", "start", "--no-block", "bluemind-ha-deactivate.service"]
    # Master again by the end: the node keeps the role.
    fake.commands.clear()
    (run / "vrrp-state").write_text("MASTER 0\n")
    assert module.activate(fake.conf, "test") == module.OK
    assert ["systemctl", "start", "--no-block", "bluemind-ha-deactivate.service"] not in fake.commands
    # BACKUP (the peer is master) and STOP (keepalived stopped) still stop an activation.
    for state in ("BACKUP", "STOP"):
        fake.commands.clear()
        module.notify(fake.conf, state)
        assert fake.commands == [["systemctl", "start", "--no-block", "bluemind-ha-deactivate.service"]]


def test_the_watcher_asks_systemd_for_the_units_at_most_every_few_seconds(node, monkeypatch):
    """A systemctl call costs about 0.3 s of CPU on a busy emulated node: the
    watcher's checks reuse its answer for UNITS_EVERY seconds; BlueMind's state
    is read at every check."""
    module, fake = node
    module.activate(fake.conf, "test")
    now = [100.0]
    monkeypatch.setattr(module, "_UNITS_SEEN", {"at": None, "down": []})
    calls = []
    real = module.units_down
    monkeypatch.setattr(module, "units_down", lambda conf: calls.append(now[0]) or real(conf))
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    for second in range(12):
        assert module.health(fake.conf, units_max_age=module.UNITS_EVERY)[0] == module.OK, second
        now[0] += 1
    assert calls == [100.0, 105.0, 110.0]
    # A unit that died is seen at the next call, at most UNITS_EVERY seconds on.
    fake.active_units.discard("bm-nginx.service")
    results = []
    while len(results) < 4:
        results.append(module.health(fake.conf, units_max_age=module.UNITS_EVERY)[0])
        now[0] += 1
    assert results == [module.OK, module.OK, module.OK, module.FAILED]
    # The one-shot health command asks every time.
    calls.clear()
    module.health(fake.conf)
    module.health(fake.conf)
    assert len(calls) == 2


def test_a_new_master_is_not_failed_before_its_activation_is_marked(node):
    """The notify hook records MASTER, then a Python start marks the activation:
    a check in between passes for MASTER_GRACE seconds (the lab's watcher, every
    second, sent a new master to FAULT there and its activation was stopped),
    unless an activation failed since the node became master."""
    module, fake = node
    run = Path(module.RUN)
    run.mkdir(exist_ok=True)
    (run / "vrrp-state").write_text(f"MASTER {time.time() - 2:.3f}\n")
    code, why = module.health(fake.conf)
    assert code == module.OK and "the activation is starting" in why
    (run / "vrrp-state").write_text(f"MASTER {time.time() - module.MASTER_GRACE - 1:.3f}\n")
    assert module.health(fake.conf)[0] == module.FAILED
    (run / "vrrp-state").write_text(f"MASTER {time.time() - 2:.3f}\n")
    fake.claim_rc = 1
    assert module.activate(fake.conf, "test") != module.OK
    assert module.health(fake.conf) == (module.FAILED, "VRRP master but not active (the activation failed or has "
                                                       "not started)")


def test_a_master_shutting_down_keeps_its_verdict_until_the_storage_is_released(node, monkeypatch):
    """A shutdown's deactivation on the VRRP master: the check passes while it
    runs (keepalived keeps the floating IP until the storage is released, then
    hands it over when it stops); once it is over, or past its bound, the usual
    verdict of a master that is not active again. Other deactivations (VRRP
    already left MASTER) leave no marker."""
    module, fake = node
    run = Path(module.RUN)
    run.mkdir(exist_ok=True)
    (run / "vrrp-state").write_text(f"MASTER {time.time() - 600:.3f}\n")
    seen = []
    real_stop = module.stop_units

    def stop_units(conf):
        seen.append(module.health(conf))
        return real_stop(conf)

    monkeypatch.setattr(module, "stop_units", stop_units)
    assert module.deactivate(fake.conf, "shutdown") == module.OK
    assert seen and seen[0][0] == module.OK and "shutting down" in seen[0][1], seen
    assert not (run / module.RELEASING).exists()
    assert module.health(fake.conf)[0] == module.FAILED
    seen.clear()
    assert module.deactivate(fake.conf, "vrrp-not-master") == module.OK
    assert seen and seen[0][0] == module.FAILED, seen
    # A marker past its bound (a deactivation that died without removing it) no longer counts.
    module.write_marker(module.RELEASING, {"since": time.time() - 100, "timeout": 50})
    assert module.health(fake.conf)[0] == module.FAILED


def test_a_shutdown_marked_before_bluemind_stops_keeps_the_verdict_of_the_active_master(node, monkeypatch):
    """At a shutdown systemd stops BlueMind's units once mark-releasing has run
    (bluemind-ha-shutdown-begin.service): an active VRRP master whose BlueMind no
    longer answers keeps a passing verdict while the marker is within its bound,
    and fails as an active node whose BlueMind is down without it (the peer took
    over 6 s before the release). A passive node gets no marker."""
    module, fake = node
    run = Path(module.RUN)
    run.mkdir(exist_ok=True)
    (run / "vrrp-state").write_text(f"MASTER {time.time() - 600:.3f}\n")
    module.write_marker("active", {"since": time.time() - 600})
    monkeypatch.setattr(module, "bluemind_state", lambda conf: None)
    assert module.health(fake.conf) == (module.FAILED, "active, BlueMind answers None")
    # An operator's stop of the unit, no shutdown: no marker, the verdict stays failing.
    assert module.mark_releasing(fake.conf) == module.OK
    assert module.read_marker(module.RELEASING) is None
    assert module.health(fake.conf)[0] == module.FAILED
    fake.manager = "stopping"
    assert module.mark_releasing(fake.conf) == module.OK
    marker = module.read_marker(module.RELEASING)
    assert marker["timeout"] == module.releasing_bound(fake.conf) > 0
    code, why = module.health(fake.conf)
    assert code == module.OK and "shutting down" in why, why
    # Only on the VRRP master: a node that already left MASTER has nothing to keep.
    (run / "vrrp-state").write_text(f"BACKUP {time.time():.3f}\n")
    assert module.health(fake.conf)[0] == module.FAILED
    (run / "vrrp-state").write_text(f"MASTER {time.time() - 600:.3f}\n")
    module.write_marker(module.RELEASING, {"since": time.time() - 100, "timeout": 50})
    assert module.health(fake.conf)[0] == module.FAILED, "a marker past its bound no longer counts"
    module.remove_marker(module.RELEASING)
    module.remove_marker("active")
    assert module.mark_releasing(fake.conf) == module.OK
    assert module.read_marker(module.RELEASING) is None, "a passive node has nothing to hand over"


def test_mark_releasing_is_a_command_of_the_program(node):
    module, dummy = node
    assert "mark-releasing" in module.COMMANDS
    assert "mark-releasing" in module.__doc__


# ------------------------------------------------- alerts on the wire (issue 29, item 4)

def self_signed(tmp_path):
    """A CA-less certificate for 127.0.0.1 (the test's own https endpoint)."""
    import datetime  # pylint: disable=import-outside-toplevel
    import ipaddress  # pylint: disable=import-outside-toplevel
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "hook.pem", tmp_path / "hook.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def hook_server(received, answer=204, location=None, tls=None):
    """One request served in a thread: what it received, and its answer."""
    import ssl  # pylint: disable=import-outside-toplevel

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            self.send_response(answer)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        # A followed redirect would come back as a GET.
        do_GET = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    server.timeout = 5
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.handle_request, daemon=True).start()
    return server


EVENT = {"node": "node1", "transition": "activate", "outcome": "failed", "seconds": 3.1, "error": "test"}


@pytest.fixture()
def logged(node, monkeypatch):
    module, _fake = node
    lines = []
    monkeypatch.setattr(module, "log", lambda message, *args: lines.append(message))
    return lines


def test_an_https_webhook_gets_its_token_after_the_certificate_is_verified(node, tmp_path, logged):
    module, fake = node
    tls = self_signed(tmp_path)
    received = []
    server = hook_server(received, tls=tls)
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": f"https://127.0.0.1:{server.server_port}/hook",
                                                     "webhook_token": "t0ken", "ca_file": tls[0], "timeout": 5}))
    module.alert(fake.conf, EVENT)
    server.server_close()
    assert received == [{"path": "/hook", "authorization": "Bearer t0ken"}], logged
    assert not [line for line in logged if "failed" in line.split(":", 2)[-1] and "webhook" in line]


def test_an_https_webhook_whose_certificate_is_not_trusted_gets_nothing(node, tmp_path, logged):
    module, fake = node
    received = []
    server = hook_server(received, tls=self_signed(tmp_path))
    # No ca_file: the system's CAs do not know the test's certificate.
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": f"https://127.0.0.1:{server.server_port}/hook",
                                                     "webhook_token": "t0ken", "timeout": 5}))
    module.alert(fake.conf, EVENT)
    server.server_close()
    assert received == []
    assert any("webhook" in line and "CERTIFICATE_VERIFY_FAILED" in line for line in logged), logged


def test_a_webhook_redirect_is_not_followed_so_the_token_goes_nowhere_else(node, tmp_path, logged):
    module, fake = node
    tls = self_signed(tmp_path)
    elsewhere, received = [], []
    other = hook_server(elsewhere)
    server = hook_server(received, answer=302, location=f"http://127.0.0.1:{other.server_port}/collect", tls=tls)
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": f"https://127.0.0.1:{server.server_port}/hook",
                                                     "webhook_token": "t0ken", "ca_file": tls[0], "timeout": 5}))
    module.alert(fake.conf, EVENT)
    server.server_close()
    other.server_close()
    assert received == [{"path": "/hook", "authorization": "Bearer t0ken"}]
    assert elsewhere == []
    assert any("redirect to http://127.0.0.1" in line and "not followed" in line for line in logged), logged


def test_a_webhook_token_is_never_sent_over_plain_http(node, tmp_path, logged):
    module, fake = node
    received = []
    server = hook_server(received)
    (tmp_path / "alert.json").write_text(json.dumps({"webhook_url": f"http://127.0.0.1:{server.server_port}/hook",
                                                     "webhook_token": "t0ken", "timeout": 5}))
    module.alert(fake.conf, EVENT)
    server.server_close()
    assert received == [{"path": "/hook", "authorization": None}]
    assert any("not https: sent without its token" in line for line in logged), logged


class FakeSMTP:
    """smtplib.SMTP as the alert drives it: what it was asked, in order."""
    calls: list = []

    def __init__(self, host, port, timeout):
        self.calls.append(("connect", host, port))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starttls(self, context=None):
        self.calls.append(("starttls", context))

    def login(self, user, password):
        self.calls.append(("login", user, password))

    def send_message(self, message):
        self.calls.append(("send", message["To"]))


@pytest.mark.parametrize("starttls", [False, True])
def test_the_relay_password_goes_only_over_a_verified_starttls(node, tmp_path, logged, monkeypatch, starttls):
    import smtplib  # pylint: disable=import-outside-toplevel
    import ssl  # pylint: disable=import-outside-toplevel
    module, fake = node
    FakeSMTP.calls = []
    monkeypatch.setattr(smtplib, "SMTP", FakeSMTP)
    (tmp_path / "alert.json").write_text(json.dumps({
        "smtp_host": "relay.example.org", "smtp_port": 587, "smtp_starttls": starttls, "smtp_username": "ha",
        "smtp_password": "relay-s3cret", "email_to": ["ops@example.org"]}))
    module.alert(fake.conf, EVENT)
    kinds_seen = [call[0] for call in FakeSMTP.calls]
    if starttls:
        assert kinds_seen == ["connect", "starttls", "login", "send"], FakeSMTP.calls
        context = FakeSMTP.calls[1][1]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    else:
        assert kinds_seen == [], FakeSMTP.calls
        assert any("needs smtp_starttls" in line for line in logged), logged
