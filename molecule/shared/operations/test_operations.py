"""The operations playbooks on a converged lab pair (either scenario), outside the
CI suite for time (10 to 15 minutes under emulation): `make lab-operations` runs
them against `make lab`'s pair (docs/lab.md).

- status reports the nominal pair and exits 0;
- switchover is refused, with nothing changed, while the storage is not whole
  (DRBD: the replication link of the passive node cut; SAN: one fabric path of the
  passive node cut);
- switchover both ways while a client writes numbered mail through the floating
  IP: every acknowledged write is read back through the floating IP afterwards,
  the pair is nominal with the other node active, and the client's error window
  and the playbook's measured unavailable time are recorded;
- status exits non-zero while the active node is powered off (after the
  failover), and restore_nominal, once it is back, rejoins it and moves the service
  back to the preferred node;
- rebuild is refused against the active node; a passive node reinstalled from
  the base image (blank disks, same name and addresses) is rebuilt while a client
  on the survivor writes through the floating IP: no error, nothing lost, the pair
  nominal (DRBD: a full resync to the rebuilt node);
- upgrade is refused on a degraded pair; then from the stand-in's 5.1.100 to
  5.1.101: the post-upgrade step on the active node only, both nodes on 5.1.101,
  the pair nominal (the lab is left on 5.1.101)."""
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labtopo
import pairstate

NODES = labtopo.members("bluemind_ha")
VARS = labtopo.inventory_vars("bluemind_ha")
STORAGE = VARS["bluemind_ha_storage"]
RESULTS = labtopo.LOGS


def controller(node: str) -> dict:
    return json.loads(labtopo.vm(node).check_output("bluemind-ha status --json"))


def active_node() -> str:
    active = [n for n in NODES if controller(n)["role"] == "active"]
    assert len(active) == 1, f"active nodes: {active}"
    return active[0]


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def status_ok(inventory) -> bool:
    return labtopo.run_playbook("bluemind_ha.cluster.status", inventory)["rc"] == 0


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return labtopo.write_inventory(tmp_path_factory.mktemp("operations") / "hosts.yml")


@pytest.fixture(scope="module")
def results():
    data = {"scenario": STORAGE, "switchovers": []}
    yield data
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"operations-{STORAGE}.json"
    # A run of some checks only (-k) keeps what the others recorded before.
    kept = json.loads(path.read_text()) if path.exists() else {}
    kept.update({key: value for key, value in data.items() if value})
    path.write_text(json.dumps(kept, indent=2))


def test_status_reports_the_nominal_pair(inventory):
    report = labtopo.run_playbook("bluemind_ha.cluster.status", inventory)
    assert report["rc"] == 0, report["stderr"]
    assert all(report["stats"][n]["changed"] == 0 for n in NODES), report["stats"]


@contextlib.contextmanager
def storage_not_whole(inventory):
    """The passive node's replication link (DRBD) or one of its fabric paths (SAN)
    cut until the block ends, then the pair nominal again; yields (active, passive)."""
    active = active_node()
    passive = other(active)
    segment = "replication" if STORAGE == "drbd" else "fabric_a"
    labtopo.labctl("link", labtopo.lab_name(), passive, segment, "off")
    try:
        # Wait until the pair itself sees it (DRBD disconnected; a SAN path failed).
        labtopo.wait_for(lambda: not status_ok(inventory), 180, f"status to report {passive}'s {segment} cut")
        yield active, passive
    finally:
        labtopo.labctl("link", labtopo.lab_name(), passive, segment, "on")
    labtopo.wait_for(lambda: status_ok(inventory), 600, "the pair to be nominal again")


def assert_refused(report: dict, phrase: str):
    """Failed with phrase in a failure message, nothing changed on either node."""
    assert report["rc"] != 0
    assert all(report["stats"][n]["changed"] == 0 for n in NODES), report["stats"]
    assert any(phrase in msg for msg in failures(report)), failures(report)


def test_switchover_is_refused_while_the_storage_is_not_whole(inventory):
    with storage_not_whole(inventory) as (active, _passive):
        assert_refused(labtopo.run_playbook("bluemind_ha.cluster.switchover", inventory), "Switchover refused")
        assert active_node() == active


@pytest.mark.parametrize("way", ["there", "back"])
def test_switchover_moves_the_service_and_loses_no_acknowledged_write(inventory, results, way):
    source = active_node()
    target = other(source)
    prefix = f"switch-{way}-{int(time.time())}"
    client = pairstate.Client(target, prefix)
    labtopo.wait_for(lambda: len(client.acked) > 10, 60, "the client to make progress")
    report = labtopo.run_playbook("bluemind_ha.cluster.switchover", inventory)
    after = len(client.acked)
    labtopo.wait_for(lambda: len(client.acked) > after + 10, 120, "the client to write to the new active node")
    client.stop()
    assert report["rc"] == 0, report["stderr"] + json.dumps([r.get("msg") for n, h, r in labtopo.task_results(report)
                                                             if r["status"] == "failed"])
    measured = [r["ansible_facts"]["bluemind_ha_switchover"] for name, host, r in labtopo.task_results(report)
                if "bluemind_ha_switchover" in r.get("ansible_facts", {})]
    assert measured and measured[0]["from"] == source and measured[0]["to"] == target, measured
    assert active_node() == target
    lost = client.unreadable()
    assert not lost, f"acknowledged mail not readable after the switchover: {lost[:10]}"
    entry = {"from": source, "to": target, "unavailable_seconds": measured[0]["unavailable_seconds"],
             "stop_seconds": measured[0]["stop_seconds"], "start_seconds": measured[0]["start_seconds"],
             "client_acknowledged": len(client.acked), "client_errors": len(client.errors),
             "client_error_window_seconds": client.error_window()}
    results["switchovers"].append(entry)
    print(json.dumps(entry))
    # The client saw BlueMind unavailable no longer than the playbook measured,
    # plus its own request timeout and the floating IP's move.
    assert client.error_window() <= measured[0]["unavailable_seconds"] + 30, entry


def failures(report: dict) -> list[str]:
    return [str(r.get("msg", "")) for name, host, r in labtopo.task_results(report) if r["status"] == "failed"]


def preferred_node() -> str:
    """The keepalived role's rule: the higher keepalived_priority, else the first
    node of the group (150 against 100)."""
    priorities = {n: labtopo.host_vars(n).get("keepalived_priority", VARS.get("keepalived_priority")) for n in NODES}
    if all(p is not None for p in priorities.values()):
        return max(NODES, key=lambda n: priorities[n])
    return NODES[0]


def settled(active: str) -> bool:
    mine, peer = controller(active), controller(other(active))
    return (mine["role"], mine["bluemind"], peer["role"]) == ("active", "CORE_STATE_RUNNING", "passive")


def test_status_fails_while_a_node_is_off_and_restore_nominal_brings_the_preferred_node_back(inventory, results):
    victim = active_node()
    survivor = other(victim)
    labtopo.labctl("power", labtopo.lab_name(), victim, "off")
    started = time.monotonic()
    labtopo.wait_for(lambda: controller(survivor)["role"] == "active"
                     and controller(survivor)["bluemind"] == "CORE_STATE_RUNNING", 300,
                     f"{survivor} to take over from the powered-off {victim}")
    failover = round(time.monotonic() - started, 1)
    report = labtopo.run_playbook("bluemind_ha.cluster.status", inventory)
    assert report["rc"] != 0, "status exited 0 with a node powered off"
    assert report["stats"][survivor]["changed"] == 0, report["stats"]
    labtopo.labctl("power", labtopo.lab_name(), victim, "on", "--wait")
    labtopo.vm.cache_clear()
    report = labtopo.run_playbook("bluemind_ha.cluster.restore_nominal", inventory,
                                  {"bluemind_ha_restore_preferred": True}, timeout=2400)
    assert report["rc"] == 0, report["stderr"] + json.dumps(failures(report))
    assert active_node() == preferred_node()
    assert settled(preferred_node())
    assert status_ok(inventory)
    results["restore_nominal"] = {"powered_off": victim, "failover_seconds": failover,
                                  "messages": [r.get("msg") for n, h, r in labtopo.task_results(report)
                                               if n.startswith("Report") or "nominal" in str(r.get("msg", ""))][-2:]}


def test_rebuild_is_refused_against_the_active_node(inventory):
    active = active_node()
    report = labtopo.run_playbook("bluemind_ha.cluster.rebuild", inventory, {"bluemind_ha_rebuild_node": active})
    assert_refused(report, f"{active} is the ACTIVE node")
    assert active_node() == active


def prepare_reimaged(node: str, inventory) -> None:
    """What the operator's provisioning does for a reinstalled server, here the
    lab's prepare (its clock pointed at the lab's time server), on that node only."""
    playbook = Path(__file__).resolve().parents[1] / "prepare.yml"
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="False")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook),
                           "--limit", f"{node}:localhost", "-e", f"lab_name_override={labtopo.lab_name()}"],
                          capture_output=True, text=True, timeout=1200, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_rebuild_of_a_reinstalled_passive_node_keeps_the_service(inventory, results):
    survivor = active_node()
    node = other(survivor)
    prefix = f"rebuild-{int(time.time())}"
    since = labtopo.vm(survivor).check_output("date +%Y-%m-%dT%H:%M:%S")
    labtopo.labctl("power", labtopo.lab_name(), node, "reimage")
    if STORAGE == "drbd":
        # The survivor's DRBD fences the peer it lost (its power off through the
        # management controller): the operator reinstalls a node that stays off, so
        # the node is powered on only once that is done (powered on earlier, the
        # fencing switched it off again as it booted).
        labtopo.wait_for(lambda: pairstate.fenced_since(survivor, node, since), 180, f"{survivor} to fence {node}")
    labtopo.labctl("power", labtopo.lab_name(), node, "on", "--wait")
    labtopo.vm.cache_clear()
    assert labtopo.vm(node).run("test -e /usr/local/sbin/bluemind-ha").rc != 0, f"{node} was not reinstalled"
    # The client runs on the survivor from here: the loss of the passive node is a
    # fault of its own (drbd: the survivor's I/O waits for the peer's ping timeout
    # and its fencing, 10-20 s in the lab, which a client started before saw); the
    # rebuild itself must not disturb the service.
    client = pairstate.Client(survivor, prefix, seconds=3600)
    labtopo.wait_for(lambda: len(client.acked) > 10, 60, "the client to make progress")
    prepare_reimaged(node, inventory)
    started = time.monotonic()
    report = labtopo.run_playbook("bluemind_ha.cluster.rebuild", inventory, {"bluemind_ha_rebuild_node": node},
                                  timeout=3600)
    took = round(time.monotonic() - started, 1)
    after = len(client.acked)
    labtopo.wait_for(lambda: len(client.acked) > after + 10, 60, "the client to keep writing")
    client.stop()
    assert report["rc"] == 0, report["stderr"] + json.dumps(failures(report))
    changed_on_survivor = sorted({name for name, host, r in labtopo.task_results(report)
                                  if host == survivor and r.get("changed")})
    results["rebuild"] = {"node": node, "survivor": survivor, "seconds": took,
                          "changed_on_survivor": changed_on_survivor,
                          "client_acknowledged": len(client.acked), "client_errors": len(client.errors)}
    print(json.dumps(results["rebuild"]))
    assert not client.errors, client.errors[:5]
    assert active_node() == survivor and settled(survivor)
    lost = client.unreadable()
    assert not lost, f"acknowledged mail not readable after the rebuild: {lost[:10]}"
    assert status_ok(inventory)
    if STORAGE == "drbd":
        # A full resync from the survivor, never the other way.
        log = labtopo.vm(node).check_output("journalctl -k -b --no-pager | grep -E 'Resync done|SyncTarget' || true")
        assert "SyncTarget" in log or "Resync done" in log, log


def test_upgrade_is_refused_on_a_degraded_pair(inventory):
    with storage_not_whole(inventory):
        report = labtopo.run_playbook("bluemind_ha.cluster.upgrade", inventory, {"bluemind_version": "5.1.101"})
        assert_refused(report, "Upgrade refused, nothing was changed.")
        versions = {n: labtopo.vm(n).check_output("dpkg-query -W -f='${Version}' bm-core") for n in NODES}
        assert set(versions.values()) == {VARS["bluemind_version"]}, versions


def test_upgrade_to_the_stand_in_s_next_version(inventory, results):
    """Last: it leaves the pair on 5.1.101, which the scenario's inventory does not say."""
    active = active_node()
    passive = other(active)
    upgrades = "/var/lib/postgresql/bluemind.upgrades"  # the stand-in's record, on the HA storage
    # One line a post-upgrade step: "TIME VERSION".
    before = [line.split()[-1] for line in labtopo.vm(active).run(f"cat {upgrades}").stdout.splitlines()]
    report = labtopo.run_playbook("bluemind_ha.cluster.upgrade", inventory, {"bluemind_version": "5.1.101"},
                                  timeout=1800)
    assert report["rc"] == 0, report["stderr"] + json.dumps(failures(report))
    versions = {n: labtopo.vm(n).check_output("dpkg-query -W -f='${Version}' bm-core") for n in NODES}
    assert set(versions.values()) == {"5.1.101"}, versions
    post = [(host, r.get("status")) for name, host, r in labtopo.task_results(report)
            if "Run the post-upgrade step" in name]
    assert [h for h, status in post if status not in ("skipped",)] == [active], post
    after = [line.split()[-1] for line in labtopo.vm(active).check_output(f"cat {upgrades}").splitlines()]
    assert after == before + ["5.1.101"], after
    assert active_node() == active and settled(active)
    assert controller(passive)["role"] == "passive"
    assert status_ok(inventory)
    results["upgrade"] = {"active": active, "messages": [r.get("msg") for n, h, r in labtopo.task_results(report)
                                                         if n == "Report the upgrade"]}
    print(json.dumps(results["upgrade"]))
