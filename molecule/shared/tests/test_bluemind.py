"""BlueMind on the pair, moved by the failover controller (both scenarios). BlueMind here is the lab's stand-in (tests/lab/bm_standin,
a test double): its bm-core answers the state endpoint and stores test mail under
/var/spool/cyrus/data and /var/lib/postgresql, both on the HA storage.

Each failover: a record written through the API on the active node and a writer
fsyncing numbered records on the HA filesystem, the active node powered off, the
time until the peer holds the floating IP and until the API answers
CORE_STATE_RUNNING through it, the record and every acknowledged write read back
there, the steps of the new active node's controller from its journal, the
webhook call a receiver on the host got, and the floating IP staying put when the
old node boots again."""
import concurrent.futures
import contextlib
import hashlib
import http.server
import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path

import pytest

import labtopo
import pairstate

NODES = labtopo.members("bluemind_ha")
VIP = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_vip"].split("/")[0]
STORAGE = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_storage"]
RESULTS = labtopo.LOGS
# molecule.yml sets the runs (1 in each scenario in CI); LAB_FAILOVER_RUNS=5
# makes the benchmark of the note.
RUNS = int(os.environ.get("LAB_FAILOVER_RUNS", "1"))
# Issue 27: the survivor of the power-off runs with its CPU saturated (two busy
# loops per vCPU) for the whole failover (LAB_FAILOVER_LOAD=0 for the unloaded
# benchmark); the active node keeps the floating IP under the same load for
# LAB_LOAD_SECONDS.
LOADED = os.environ.get("LAB_FAILOVER_LOAD", "1") == "1"
LOAD_SECONDS = float(os.environ.get("LAB_LOAD_SECONDS", "300"))
MOUNT = "/srv/bluemind-ha"  # controller_mountpoint
# Test instrument, run on a node: one HTTPS call to BlueMind through the floating IP.
CLIENT = r"""
import json, ssl, sys, urllib.request, urllib.error
method, path = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read() if method == "PUT" else None
request = urllib.request.Request("https://%s" % sys.argv[3] + path, data=data, method=method)
try:
    with urllib.request.urlopen(request, timeout=5, context=ssl._create_unverified_context()) as response:
        print(json.dumps({"code": response.status, "body": response.read().decode()}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"code": exc.code, "body": ""}))
except OSError as exc:
    print(json.dumps({"code": 0, "body": str(exc)}))
"""
BLUEMIND_UNITS = "'bm-*' bluemind.target postgresql.service"


def api(node: str, method: str, path: str, body: str = "") -> dict:
    # The client is written again with every call: written once, it came back
    # empty on a node powered off seconds after its creation (ext4 writes a new
    # file's data up to 30 s after its name), python3 ran nothing and the
    # failover check failed on an empty answer (CI of stops 19 and 20).
    out = labtopo.vm(node).check_output(
        f"cat > /var/tmp/bm-client.py <<'EOF'\n{CLIENT}\nEOF\n"
        f"printf %s {body!r} | python3 /var/tmp/bm-client.py {method} {path} {VIP}")
    try:
        return json.loads(out)
    except ValueError as exc:
        raise AssertionError(f"{node}: the test client printed {out!r}, not its JSON line") from exc


def holders() -> list[str]:
    return [n for n in NODES if labtopo.vm(n).run(f"ip -o addr show to {VIP}").stdout.strip()]


def holder() -> str:
    held = holders()
    assert len(held) == 1, f"floating IP held by {held}"
    return held[0]


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def vrrp_state(node: str) -> str:
    return labtopo.vm(node).run("cut -d' ' -f1 /run/bluemind-ha/vrrp-state").stdout.strip()


def running_units(node: str) -> list[str]:
    out = labtopo.vm(node).run(f"systemctl list-units --state=active --plain --no-legend {BLUEMIND_UNITS}").stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def state_through_vip(node: str) -> str:
    answer = api(node, "GET", "/api/system/installation/state")
    return json.loads(answer["body"]) if answer["code"] == 200 else f"HTTP {answer['code']}"


class Receiver:
    """The administrators' webhook: records each POST (the controller's alerts)."""

    def __init__(self):
        self.calls: list[dict] = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                calls.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_for_guests(self) -> str:
        # QEMU's user network: 10.0.2.2 is the host's loopback.
        return f"http://10.0.2.2:{self.server.server_port}/hook"


@pytest.fixture(scope="module")
def receiver():
    hook = Receiver()
    # Test configuration: the alert settings point at the receiver, written as the
    # role writes them from controller_alert_webhook_url (the re-run of site.yml
    # below passes that variable and must find nothing to change).
    for node in NODES:
        labtopo.vm(node).check_output(
            f"python3 -c \"import json; p='/etc/bluemind-ha/alert.json'; c=json.load(open(p));"
            f" c['webhook_url']='{hook.url_for_guests()}';"
            f" open(p, 'w').write(json.dumps(c, indent=4, sort_keys=True) + chr(10))\"")
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return labtopo.write_inventory(tmp_path_factory.mktemp("bluemind") / "hosts.yml")


def test_bluemind_runs_on_the_active_node_only_with_the_same_versions():
    active = holder()
    # The first check after the converge: a fresh deployment serves from the
    # preferred node (the keepalived role's rule: the first node of the group, 150
    # against 100; keepalived starts there first).
    assert active == NODES[0], f"a fresh deployment made {active} active, not the preferred {NODES[0]}"
    passive = other(active)
    assert "bm-core.service" in running_units(active) and "postgresql.service" in running_units(active)
    assert running_units(passive) == [], f"{passive} runs {running_units(passive)}"
    versions = {n: labtopo.vm(n).check_output("dpkg-query -W -f='${Version}' bm-core") for n in NODES}
    assert set(versions.values()) == {labtopo.inventory_vars("bluemind_ha")["bluemind_version"]}, versions
    for node in NODES:
        # Nothing starts at boot; the Java services stay wired into the target.
        enabled = labtopo.vm(node).run("systemctl is-enabled bluemind.target bm-nginx.service postgresql.service")
        assert "enabled" not in enabled.stdout.split(), f"{node}: {enabled.stdout}"
        wanted = labtopo.vm(node).check_output("systemctl show -p WantedBy --value bm-core.service")
        assert wanted.split() == ["bluemind.target"], f"{node}: bm-core is wanted by {wanted}"
        # What gives up the active role when the node shuts down (a clean reboot),
        # and what BlueMind's units wait for then (the guard's Before=).
        for unit in ("bluemind-ha-shutdown-begin", "bluemind-ha-shutdown"):
            shutdown = labtopo.vm(node).service(unit)
            assert shutdown.is_enabled and shutdown.is_running, f"{node}: {unit} is not enabled and active"
        before = labtopo.vm(node).check_output("systemctl show -p Before --value bm-core.service postgresql.service")
        assert before.count("bluemind-ha-shutdown-begin.service") == 2, f"{node}: {before}"
    assert state_through_vip(passive) == "CORE_STATE_RUNNING"
    # The post-install setup gave each password to its own option of bm-cli
    # (admin0's --admin0-pass, the Setup Wizard's --sw-pass): the stand-in keeps
    # their digests in its installation record, on the HA storage.
    record = json.loads(labtopo.vm(active).check_output("cat /var/lib/postgresql/bluemind.installed"))
    lab = labtopo.inventory_vars("bluemind_ha")
    assert record["admin0_pass_sha256"] == hashlib.sha256(lab["bluemind_admin0_password"].encode()).hexdigest()
    assert record["sw_pass_sha256"] == hashlib.sha256(lab["bluemind_setup_password"].encode()).hexdigest()


def node_monitoring(node: str) -> tuple[dict[str, str], int, str]:
    """The node's metrics file, written on demand by the unit its timer starts,
    and the Nagios plugin mode's exit code and line (issue 31)."""
    host = labtopo.vm(node)
    host.check_output("systemctl start bluemind-ha-metrics.service")
    path = labtopo.host_vars(node).get("controller_metrics_path",
                                       "/var/lib/prometheus/node-exporter/bluemind_ha.prom")
    text = host.check_output(f"cat {path}")
    metrics = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
               if line and not line.startswith("#")}
    plugin = host.run("bluemind-ha status --nagios")
    return metrics, plugin.rc, plugin.stdout.strip()


def assert_monitoring_sees(active: str):
    """Both nodes' monitoring outputs agree with the pair: the active node's
    metrics and plugin say it serves, the passive one's that it could take over."""
    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        seen = dict(zip(NODES, pool.map(node_monitoring, NODES)))
    for node, (metrics, rc, line) in seen.items():
        label = f'{{node="{node}"}}'
        assert metrics[f"bluemind_ha_active{label}"] == str(int(node == active)), (node, metrics)
        assert metrics[f"bluemind_ha_health_ok{label}"] == "1", (node, metrics)
        assert metrics[f"bluemind_ha_storage_ok{label}"] == "1", (node, metrics)
        assert metrics[f"bluemind_ha_bluemind_running{label}"] == str(int(node == active)), (node, metrics)
        assert abs(float(metrics[f"bluemind_ha_metrics_timestamp_seconds{label}"]) - time.time()) < 120, metrics
        assert rc == 0 and line.startswith("BLUEMIND-HA OK - "), (node, rc, line)
        assert ("serving" if node == active else "ready to take over") in line, line
        # The file node_exporter reads is the node's only trace: root-owned, world-readable.
        assert metrics[f'bluemind_ha_info{{node="{node}",peer="{other(node)}",storage="{STORAGE}"}}'] == "1"


def test_monitoring_sees_the_nominal_pair():
    assert_monitoring_sees(holder())


@pytest.mark.one_scenario("the guard's condition is a file in /run, the storage is not touched")
def test_an_upgrade_on_the_passive_node_does_not_start_bluemind_there():
    passive = other(holder())
    host = labtopo.vm(passive)
    # The vendor's bm-conf trigger runs `systemctl start bluemind.target` on upgrade.
    host.check_output("apt-get install -y -q -o Dpkg::Options::=--force-confold --allow-downgrades"
                      " bm-core=5.1.101 bm-conf=5.1.101 bm-nginx=5.1.101 bm-postgresql=5.1.101"
                      " bm-full=5.1.101 bm-plugin-cli-setup=5.1.101")
    try:
        assert running_units(passive) == [], f"{passive} started {running_units(passive)}"
        log = host.check_output("journalctl -b --no-pager -u bm-core.service | tail -5")
        assert "unmet condition check (ConditionPathExists=/run/bluemind-ha/active)" in log, log
    finally:
        version = labtopo.inventory_vars("bluemind_ha")["bluemind_version"]
        host.check_output(f"apt-get install -y -q --allow-downgrades bm-core={version} bm-conf={version}"
                          f" bm-nginx={version} bm-postgresql={version} bm-full={version}"
                          f" bm-plugin-cli-setup={version}")
    assert running_units(passive) == []
    assert pairstate.assert_pair_invariants() == other(passive)


# The longest error window the client may see when bm-core crashes on the active
# node: the health check fails `fall` times (2 x 4 s in the lab), then a
# switchover (the old node stops BlueMind and releases the storage, the peer
# claims, mounts and starts it: 25 to 35 s measured, docs/lab.md), plus one
# request's timeout (5 s); measured 40 s (drbd) and 46 s (san) until the peer
# served. Twice the expected for emulation.
CRASH_BOUND = 100.0


@pytest.mark.one_scenario("a failing health verdict hands over like the public link loss and the"
                          " SAN's loss of every path, which both scenarios check")
def test_bm_core_crashing_moves_the_service_to_the_peer():
    active = holder()
    peer = other(active)
    with pairstate.client_during(active, "bm-core-crash", CRASH_BOUND):
        # A crash, not a stop: SIGKILL, no clean shutdown, the unit left failed.
        labtopo.vm(active).check_output("systemctl kill --signal=KILL bm-core.service")
        # Polled without holder()'s assertion: between the old holder dropping the
        # address and the peer adding it, nobody holds it for a moment.
        labtopo.wait_for(lambda: holders() == [peer], 120, f"the floating IP to move to {peer}")
        labtopo.wait_for(lambda: state_through_vip(active) == "CORE_STATE_RUNNING", 300, "BlueMind on the peer")
        labtopo.wait_for(lambda: running_units(active) == [], 120, f"{active} to stop BlueMind")
    assert pairstate.assert_pair_invariants() == peer


# The longest error window the client may see when the passive node loses its
# power. drbd: the Primary's writes wait for DRBD to declare the peer dead (at
# most ping-int + (ping-timeout + timeout) / 10 = 16.5 s with the role's
# defaults), then for its fence-peer handler: two outdate attempts over the
# public network (3 s each), then the power-off through the management
# controller (found off: about 1 s), plus one request's timeout (5 s): 34 s at
# most; measured 15.9 s, 4 failed requests (docs/lab.md). san: the active
# node's reservation and paths do not depend on the passive node: no error.
PASSIVE_LOSS_BOUND = {"drbd": 40.0, "san": 0.0}


@pytest.mark.one_scenario("on a SAN the active node's paths and reservation do not depend on the passive"
                          " node; its return (its key registered at boot) is test_san's rejoin after a reboot")
def test_power_off_of_the_passive_node_keeps_the_service_within_its_bound():
    active = holder()
    passive = other(active)
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(passive), 600,
                     f"{passive} to be ready to take over")
    since = labtopo.vm(active).check_output("date +%Y-%m-%dT%H:%M:%S")
    with pairstate.client_during(active, "passive-off", PASSIVE_LOSS_BOUND[STORAGE]) as client, \
            labtopo.powered_off(passive):
        # About 10 s of writing at the client's pace (pairstate.CLIENT_PAUSE).
        after = len(client.acked)
        labtopo.wait_for(lambda: len(client.acked) > after + 12, 180, "the client to go on writing without the passive node")
        pairstate.assert_pair_invariants(nodes=[active])
        if STORAGE == "drbd":
            # The active node's DRBD fences the peer it lost (powers it off through its
            # management controller, or finds it off): powered on before that, the
            # node would be switched off again as it boots.
            labtopo.wait_for(lambda: pairstate.fenced_since(active, passive, since), 180, f"{active} to fence {passive}")
        labtopo.labctl("power", labtopo.lab_name(), passive, "on", "--wait")
        labtopo.vm.cache_clear()
        labtopo.wait_for(lambda: pairstate.ready_to_take_over(passive), 600,
                         f"{passive} to be ready to take over again")
    assert holder() == active


# A clean reboot (a kernel update). Of the passive node: its shutdown takes DRBD
# down in order (the peer sees the connection closed, not lost: no fence-peer, no
# frozen I/O) and the SAN node only drops its paths. When it comes back, DRBD's
# reconnection holds the Primary's writes while the two exchange their bitmaps
# and the returning node runs its before-resync-target helper, milliseconds on a
# server; on an emulated guest still booting, 10.5 s for the helper alone
# (2026-11-28): two requests timed out (5 s each), a window of 5.5 s. Hence 30 s
# for drbd, none for san. Of the active node: its shutdown unit deactivates before
# keepalived stops (BlueMind stopped, storage unmounted and released), then
# keepalived's priority-0 advert hands the floating IP over, as in a planned
# switchover (the client's window: the deactivation, the peer's activation with
# the stand-in's 3 s start, a request's 5 s timeout; measured in the lab, about
# twice that for emulation).
CLEAN_REBOOT_BOUND = {("passive", "drbd"): 30.0, ("passive", "san"): 0.0,
                      ("active", "drbd"): 90.0, ("active", "san"): 90.0}


@pytest.mark.parametrize("role", [
    pytest.param("passive", marks=pytest.mark.one_scenario(
        "DRBD's ordered disconnect and resync without a fence; a SAN's active node does not depend on the"
        " passive one, whose return is test_san's rejoin after a reboot", storage="drbd")),
    "active"])
def test_a_clean_reboot_keeps_the_service(role):
    active = holder()
    passive = other(active)
    rebooted = passive if role == "passive" else active
    survivor = other(rebooted)
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(passive), 600,
                     f"{passive} to be ready to take over")
    before = labtopo.boot_id(rebooted)
    since = labtopo.vm(survivor).check_output("date +%Y-%m-%dT%H:%M:%S")
    t0 = time.time()
    with pairstate.client_during(active, f"{role}-reboot", CLEAN_REBOOT_BOUND[role, STORAGE]):
        # Delayed by a second, so the SSH command returns before the shutdown (a
        # timer's default accuracy, a minute, delayed it by up to 60 s).
        labtopo.vm(rebooted).check_output(
            "systemd-run --quiet --on-active=1 --timer-property=AccuracySec=100ms systemctl reboot")
        labtopo.wait_booted(rebooted, before, 600)
        with pairstate.explained(rebooted):
            labtopo.wait_for(lambda: pairstate.ready_to_take_over(rebooted), 600,
                             f"{rebooted} to be ready to take over after its reboot")
        with pairstate.explained(survivor):
            assert pairstate.assert_pair_invariants(timeout=120) == survivor
    assert holder() == survivor
    if STORAGE == "drbd":
        assert not pairstate.fenced_since(survivor, rebooted, since), (
            f"{survivor} fenced {rebooted} during a clean reboot")
    if role == "active":
        assert_released_before_the_takeover(rebooted, survivor, t0)


def assert_released_before_the_takeover(rebooted: str, survivor: str, after: float):
    """A clean shutdown of the active node hands over in order: its shutdown
    unit's deactivation (BlueMind stopped, storage unmounted and released) ends
    before the peer becomes VRRP master, so the peer never claims a storage still
    in use (on a SAN, a preemption under the old node's last writes). The record
    of the old node's previous boot against the survivor's VRRP state, both
    clocks synchronised with the lab's time server."""
    records = [json.loads(line) for line in labtopo.vm(rebooted).check_output(
        "cat /var/lib/bluemind-ha/transitions.jsonl").splitlines() if line.strip()]
    shutdown = [r for r in records if r.get("transition") == "deactivate" and r.get("reason") == "shutdown"
                and r.get("started", 0) >= after - 1]
    assert shutdown and shutdown[-1]["outcome"] == "ok", shutdown or records[-3:]
    fields = labtopo.vm(survivor).check_output("cat /run/bluemind-ha/vrrp-state").split()
    assert fields[0] == "MASTER", fields
    ended = shutdown[-1]["ended"]
    labtopo.trace(f"{rebooted}'s shutdown deactivation ended at {ended:.2f}, {survivor} VRRP master at"
                  f" {float(fields[1]):.2f} ({float(fields[1]) - ended:+.2f} s)")
    assert float(fields[1]) >= ended - 1.0, (
        f"{survivor} became VRRP master {ended - float(fields[1]):.1f} s before {rebooted} had released the"
        f" storage: {shutdown[-1]['steps']}")


# The longest error window the client may see when the active node loses its
# power: VRRP's master-down interval (3 x 1 s + skew), the survivor's claim
# (drbd: DRBD's ping timeout, at most 10.5 s, then the fence-peer handler's
# power-off through the management controller; san: the reservation preempted),
# mount and start (the stand-in's 3 s start-up), plus one request's timeout
# (5 s): the benchmark measured 28-36 s (drbd) and 12-13 s (san) to the first
# acknowledged write (docs/lab.md). About twice the worst for emulation.
ACTIVE_LOSS_BOUND = 75.0
# The same with the survivor's CPU saturated (two busy loops per vCPU at nice 0):
# the VRRP process (nice -15) still takes over within seconds; the activation's
# steps and BlueMind's start share the CPU with the load.
LOADED_LOSS_BOUND = 150.0


def transitions_since(node: str, since: float) -> list[str]:
    """The controller's transition outcomes on node since the epoch since
    ("activate: outcome=ok ...", "deactivate: outcome=interrupted ...")."""
    return labtopo.vm(node).check_output(
        f"journalctl --no-pager -t bluemind-ha -o cat --since @{int(since) - 1} "
        "| grep -E '^(activate|deactivate): outcome=' || true").splitlines()


def failover(receiver: Receiver, run: int) -> dict:
    active = holder()
    survivor = other(active)
    # A settled pair: the survivor-to-be could take over (DRBD: its disk is UpToDate).
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(survivor), 600,
                     f"{survivor} to be ready to take over")
    name = f"run{run}-{uuid.uuid4().hex[:8]}"
    written = api(active, "PUT", f"/api/test/mail/{name}", f"acknowledged mail {name}")
    assert written["code"] == 201, written
    writes = f"{MOUNT}/writes"
    writer = labtopo.Writer(active, writes, start=max(labtopo.records(active, writes), default=0))
    labtopo.wait_for(lambda: len(writer.acked) > pairstate.PROGRESS, 60, "the writer to make progress")
    calls_before = len(receiver.calls)
    client = pairstate.Client(pairstate.client_host(survivor), f"active-off{run}-{int(time.time())}")
    labtopo.wait_for(lambda: len(client.acked) > pairstate.PROGRESS, 60, "the client to make progress")
    load = labtopo.cpu_saturated(survivor) if LOADED else contextlib.nullcontext()
    # The load starts before the power-off (the survivor is busy when its peer
    # dies) and ends once the takeover is proven, before the old node boots again:
    # under the survivor's busy loops its boot took 51 s instead of about 20 s, and
    # the old node's rejoin is not what the load checks (issue 27).
    with contextlib.ExitStack() as loaded:
        loaded.enter_context(load)
        # The failover's clock starts at the power-off, once the load is on:
        # starting the load (two commands on a busy guest, 1 to 3 s) is not the
        # takeover's time (it made a loaded run read 8.07 s against 8, 2026-12-07).
        t0 = time.time()
        start = time.monotonic()
        with labtopo.powered_off(active):
            writer.stop()
            with pairstate.explained(survivor):
                vip = labtopo.wait_vip(survivor, VIP) - t0
                labtopo.wait_for(lambda: state_through_vip(survivor) == "CORE_STATE_RUNNING", 600,
                                 "BlueMind through the floating IP after the power-off", interval=0.2)
            took = time.monotonic() - start
            # The activation logs its outcome after its alerts, a moment after
            # BlueMind answers.
            labtopo.wait_for(lambda: transitions_since(survivor, t0), 60, f"{survivor}'s activation to be recorded")
            assert labtopo.vm(survivor).run(f"ip -o addr show to {VIP}").stdout.strip(), f"{survivor} lost the floating IP"
            read = api(survivor, "GET", f"/api/test/mail/{name}")
            assert read == {"code": 200, "body": f"acknowledged mail {name}"}, read
            missing = set(writer.acked) - labtopo.records(survivor, writes)
            assert not missing, f"acknowledged writes lost: {sorted(missing)[:10]}"
            steps = labtopo.vm(survivor).check_output(
                "journalctl -b --no-pager -t bluemind-ha -o cat | grep -E '^activate: step=' | tail -6")
            with pairstate.explained(survivor):
                labtopo.wait_for(lambda: len(receiver.calls) > calls_before, 60, "the webhook call")
            call = receiver.calls[-1]
            assert call["transition"] == "activate" and call["outcome"] == "ok" and call["node"] == survivor, call
            loaded.close()
            labtopo.labctl("power", labtopo.lab_name(), active, "on", "--wait")
    labtopo.vm.cache_clear()
    labtopo.wait_for(lambda: pairstate.ready_to_take_over(active), 600,
                     f"{active} to be ready to take over again")
    back = time.monotonic() - start
    client.stop()
    print(f"active node powered off: client errors {len(client.errors)}, window {client.error_window()} s,"
          f" acknowledged {len(client.acked)}")
    # The old node back, healthy: the floating IP and BlueMind stay where they are.
    assert holder() == survivor and state_through_vip(active) == "CORE_STATE_RUNNING"
    # Exactly one activation on the survivor from the power-off until now, never
    # interrupted, and no deactivation: a starved survivor takes over once (issue 27).
    outcomes = transitions_since(survivor, t0)
    assert [o.split(" seconds=")[0] for o in outcomes] == ["activate: outcome=ok"], outcomes
    assert pairstate.assert_pair_invariants(client) == survivor
    # The seconds the client could not write (pairstate.client_during says why not
    # the span from the first failure to the last).
    assert sum(client.outages()) <= (LOADED_LOSS_BOUND if LOADED else ACTIVE_LOSS_BOUND), (
        client.outages(), client.errors[:10])
    return {"loaded": LOADED, "seconds": round(took, 2), "vip_seconds": round(vip, 2), "cycle_seconds": round(back, 1),
            "writes_acknowledged": len(writer.acked),
            "from": active, "to": survivor, "steps": steps.splitlines(), "webhook_seconds": call.get("seconds"),
            "client_error_window": client.error_window(), "client_acknowledged": len(client.acked)}


def test_power_off_of_the_active_node_loses_no_acknowledged_mail(receiver):
    runs = [failover(receiver, i) for i in range(RUNS)]
    seconds = [r["seconds"] for r in runs]
    vip = [r["vip_seconds"] for r in runs]
    summary = {"runs": runs, "median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
               "vip_median": statistics.median(vip), "vip_min": min(vip), "vip_max": max(vip)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"bluemind-failover-{os.environ.get('MOLECULE_SCENARIO_NAME', 'lab')}.json").write_text(
        json.dumps(summary, indent=2))
    print(f"power-off to CORE_STATE_RUNNING through the floating IP: {seconds}; to the floating IP: {vip}")
    for run in runs:
        assert any("step=claim" in s for s in run["steps"]) and any("step=ready" in s for s in run["steps"]), run
    # advert_int 1 s: the backup declares the master dead after ~3.6 s; under
    # software emulation allow for slow scheduling, not for a missed election.
    assert summary["vip_median"] < 8, summary


@pytest.mark.one_scenario("the metrics' storage part is checked on both methods on the nominal pair;"
                          " after a failover only the roles have moved")
def test_monitoring_sees_the_pair_after_the_failover():
    """The metrics and the plugin follow the failover: the survivor is the active
    node in both, the node that came back is the passive one (issue 31)."""
    active = pairstate.assert_pair_invariants()
    assert active == holder()
    assert_monitoring_sees(active)
    # The last transition is in the survivor's metrics.
    metrics, _rc, _line = node_monitoring(active)
    assert any(k.startswith("bluemind_ha_last_transition_ok{") and 'transition="activate"' in k and v == "1"
               for k, v in metrics.items()), metrics


def rerun_playbook(tmp_path: Path) -> tuple[str, bool]:
    """What the re-run covers (LAB_SITE_RERUN), and whether keepalived is in it:
    site: all of site.yml; storage: its preflight and storage plays;
    storage-keepalived: those and the keepalived role. A whole site.yml costs 8 to
    13 minutes under emulation, the CI budget cannot afford it: the scenarios
    re-run the parts that differ between them (storage) and, in drbd, keepalived
    with a configuration change; LAB_SITE_RERUN=site checks all of it."""
    mode = os.environ.get("LAB_SITE_RERUN", "site")
    assert mode in ("site", "storage", "storage-keepalived"), f"LAB_SITE_RERUN={mode}: site, storage or storage-keepalived"
    if mode == "site":
        return "bluemind_ha.cluster.site", True
    storage = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_storage"]
    roles = f"    - role: bluemind_ha.cluster.{storage}\n"
    if mode == "storage-keepalived":
        roles += "    - role: bluemind_ha.cluster.keepalived\n"
    play = tmp_path / "rerun.yml"
    play.write_text(
        "- name: Preflight\n  ansible.builtin.import_playbook: bluemind_ha.cluster.preflight\n"
        "- name: Part of site.yml\n  hosts: bluemind_ha\n  gather_facts: false\n  become: true\n"
        f"  roles:\n{roles}")
    return str(play), mode != "storage"


# What a re-run with keepalived in it is asked to change: a VRRP setting (the
# gratuitous ARP refresh, 60 s in the lab) and the health watcher's interval (1 s
# in the lab). keepalived must reload (SIGHUP: the master keeps the floating IP),
# not restart; the watcher restarts with its new interval and carries its verdict
# over; nothing else changes.
KEEPALIVED_CHANGE = {"keepalived_garp_refresh": 90, "keepalived_check_interval": 2}
KEEPALIVED_TASKS = ("Install the VRRP configuration", "Reload keepalived", "and the health watcher's unit",
                    "Start the health watcher")


def keepalived_pid(node: str, unit: str = "keepalived") -> str:
    return labtopo.vm(node).check_output(f"systemctl show -p MainPID --value {unit}")


class LoadWindow:
    """The active node's CPU saturated for LAB_LOAD_SECONDS (issue 27: two busy
    loops per vCPU; the load's unit ends by itself then), the passive node's VRRP
    state sampled every 5 s in a thread meanwhile. The work done inside the block
    (the site re-run) starts on the busy active node, as an operator's re-run
    during office hours does; a re-run that outlasts the load finishes unloaded
    (under this load it runs about 3.7 times slower: 450 s in the drbd lab)."""

    def __init__(self, active: str):
        self.active, self.passive = active, other(active)
        self.samples: list[str] = []
        self.result = ""
        self.deadline = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                self.samples.append(vrrp_state(self.passive))
            # A failed sample fails the check at the end.
            except Exception as exc:  # pylint: disable=broad-except
                self.samples.append(f"sample failed: {exc}")
            self.stop.wait(5)

    @contextlib.contextmanager
    def run(self):
        with labtopo.cpu_saturated(self.active, seconds=LOAD_SECONDS):
            self.deadline = time.monotonic() + LOAD_SECONDS
            self.thread.start()
            try:
                yield self
                # The load lasted its whole window: its unit ends by its own bound
                # (RuntimeMaxSec, Result "timeout"), waited for here.
                host = labtopo.vm(self.active)
                labtopo.wait_for(
                    lambda: host.check_output("systemctl show -p ActiveState --value lab-cpu-load")
                    not in ("active", "activating", "deactivating"),
                    max(self.deadline - time.monotonic(), 0) + 60, f"the load on {self.active} to end", interval=5)
                self.result = host.check_output("systemctl show -p Result --value lab-cpu-load")
            finally:
                self.stop.set()
                self.thread.join(timeout=30)


def test_the_active_node_under_cpu_load_keeps_the_floating_ip_through_a_site_rerun(inventory, receiver, tmp_path):
    """A busy active node is not declared dead and a re-run on it moves nothing
    (issue 27): its CPU saturated for LAB_LOAD_SECONDS (two busy loops per vCPU),
    it keeps sending adverts (VRRP process at nice -15), its verdict stays healthy
    (the watcher at nice -5, no check that can time out), through a re-run of
    site.yml started under the load (in drbd it reloads keepalived and restarts
    the watcher there): the re-run changes only what it was asked to (see
    rerun_and_check), the passive node stays BACKUP at every sample, no
    transition on either node, the floating IP and BlueMind stay, the pair's
    invariants hold."""
    active = pairstate.assert_pair_invariants()
    passive = other(active)
    t0 = time.time()
    window = LoadWindow(active)
    with window.run():
        rerun_and_check(inventory, receiver, tmp_path, active)
        assert holder() == active
        verdict = json.loads(labtopo.vm(active).check_output("bluemind-ha status --json"))["verdict"]
    labtopo.trace(f"{len(window.samples)} samples of {passive}'s VRRP state under {LOAD_SECONDS:.0f} s of load"
                  f" on {active}, {time.time() - t0:.0f} s in all")
    assert window.result == "timeout", f"the load on {active} ended early: {window.result}"
    assert len(window.samples) >= LOAD_SECONDS // 10, window.samples
    assert set(window.samples) == {"BACKUP"}, f"{passive} left BACKUP while {active} was loaded: {window.samples}"
    for node in NODES:
        assert transitions_since(node, t0) == [], (node, transitions_since(node, t0))
    assert verdict["ok"] is True and not verdict["stale"], verdict
    assert pairstate.assert_pair_invariants() == active and state_through_vip(passive) == "CORE_STATE_RUNNING"


def rerun_and_check(inventory, receiver, tmp_path, active: str):
    """The second site run after the failovers changes only what was asked and
    moves nothing."""
    playbook, with_keepalived = rerun_playbook(tmp_path)
    extra = {"controller_alert_webhook_url": receiver.url_for_guests()}
    if with_keepalived:
        extra.update(KEEPALIVED_CHANGE)
    pids = {n: keepalived_pid(n) for n in NODES}
    watchers = {n: keepalived_pid(n, "bluemind-ha-health") for n in NODES}
    report = labtopo.run_playbook(playbook, inventory, extra)
    assert report["rc"] == 0, report["stderr"]
    changed = [(name, host) for name, host, r in labtopo.task_results(report) if r.get("changed")]
    if with_keepalived:
        unexpected = [(name, host) for name, host in changed if not any(t in name for t in KEEPALIVED_TASKS)]
        assert unexpected == [], unexpected
        for task in KEEPALIVED_TASKS:
            assert sorted(host for name, host in changed if task in name) == sorted(NODES), (task, changed)
        assert {n: keepalived_pid(n) for n in NODES} == pids, "keepalived was restarted, not reloaded"
        for node in NODES:
            assert "garp_master_refresh 90" in labtopo.vm(node).check_output("cat /etc/keepalived/keepalived.conf")
            unit = labtopo.vm(node).check_output("systemctl cat bluemind-ha-health")
            assert "--interval 2 " in unit, unit
            assert keepalived_pid(node, "bluemind-ha-health") not in ("0", watchers[node]), "the watcher kept running"
            assert labtopo.vm(node).check_output("cat /run/bluemind-ha/health/verdict") == "1"
    else:
        assert changed == [], changed
    assert holder() == active and state_through_vip(other(active)) == "CORE_STATE_RUNNING"
    assert pairstate.assert_pair_invariants() == active
