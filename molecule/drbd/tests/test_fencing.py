"""Fencing on the live pair, through the lab's Redfish test doubles and the real
fence_redfish agent: each node reads the other's power state; wrong credentials
stop a deploy before any change; when both nodes call off at once, the active
node's call wins (the host confirms the VM stopped), a second off is "already off"
at once, and the same agent powers the loser on again (a fresh boot)."""
import concurrent.futures
import json
import time

import yaml

import labtopo
import pairstate

LAB = labtopo.lab_name()
NODES = labtopo.members("bluemind_ha")
VIP = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_vip"].split("/")[0]
DELAY = labtopo.inventory_vars("bluemind_ha")["fencing_passive_delay"]
RESULTS = labtopo.LOGS


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def fence(node: str, action: str):
    return labtopo.vm(node).run(f"/usr/local/sbin/bluemind-ha-fence {action}")


def host_power(node: str) -> str:
    return labtopo.labctl("power", LAB, node, "status")


def wait_back(node: str, old_boot: str):
    """The node answers SSH again, after a fresh boot, and keepalived runs as BACKUP."""
    labtopo.wait_booted(node, old_boot, 240)
    # BACKUP, not FAULT, once its DRBD disk has resynced (the controller's health
    # check: a node that could not take over stays in FAULT).
    labtopo.wait_for(lambda: labtopo.vm(node).run("cut -d' ' -f1 /run/bluemind-ha/vrrp-state").stdout.strip()
                     == "BACKUP", 300, f"{node} to rejoin as VRRP BACKUP")


def settled_alone(node: str) -> bool:
    """node runs BlueMind, its DRBD has noticed the peer is gone and no fence-peer
    is in flight (I/O not suspended)."""
    drbd = json.loads(labtopo.vm(node).check_output("bluemind-ha-drbd status --json"))
    mine = json.loads(labtopo.vm(node).check_output("bluemind-ha status --json"))
    return (drbd.get("connection") != "Connected" and not drbd.get("io_suspended")
            and mine["role"] == "active" and mine["bluemind"] == "CORE_STATE_RUNNING")


def holder() -> str:
    held = [n for n in NODES if labtopo.vm(n).run(f"ip -o addr show to {VIP}").stdout.strip()]
    assert len(held) == 1, held
    return held[0]


def test_each_node_reads_the_other_s_power():
    # Both nodes' credentials and agents, through a status call each; the power
    # cycle through the agent is the partition check's (below): the active node
    # powers its peer off, then on again.
    for caller in NODES:
        status = fence(caller, "status")
        assert (status.rc, status.stdout.strip()) == (0, "on"), f"{caller}: {status.stderr}"


def test_fence_command_documents_its_exit_codes():
    out = labtopo.vm(NODES[0]).check_output("/usr/local/sbin/bluemind-ha-fence --help")
    for line in ("0  done", "3  the controller is unreachable", "4  the controller refused the credentials",
                 "5  timeout"):
        assert line in out
    conf = labtopo.vm(NODES[0]).file("/etc/bluemind-ha/fence.json")
    assert (conf.user, conf.mode) == ("root", 0o600)


def test_wrong_credentials_stop_the_deploy_before_any_change(tmp_path):
    inventory = labtopo.write_inventory(tmp_path / "hosts.yml")
    data = yaml.safe_load(inventory.read_text())
    data["all"]["hosts"][NODES[0]]["bluemind_ha_bmc"]["password"] = "not-the-password"
    inventory.write_text(yaml.safe_dump(data))
    report = labtopo.run_playbook("bluemind_ha.cluster.site", inventory)
    assert report["rc"] != 0
    assert all(report["stats"][n]["changed"] == 0 for n in NODES), report["stats"]
    failures = {host: r.get("msg", "") for name, host, r in labtopo.task_results(report) if r["status"] == "failed"}
    # node2 uses node1's controller: node2 is named, with node1's controller and the cause.
    assert list(failures) == [NODES[1]], failures
    message = failures[NODES[1]]
    assert NODES[0] in message and "10.0.2.100:443" in message and "refused the credentials" in message
    assert "not-the-password" not in json.dumps(report)


def test_in_a_partition_the_active_node_wins():
    active = holder()
    passive = other(active)
    # Active means VRRP master for longer than the takeover window (10 s).
    labtopo.wait_for(lambda: float(labtopo.vm(active).check_output("cut -d' ' -f2 /run/bluemind-ha/vrrp-state"))
                     < time.time() - 12, 30, f"{active} to be master for more than the takeover window")
    passive_boot = labtopo.boot_id(passive)

    def call(node):
        start = time.time()
        try:
            result = fence(node, "off")
            return node, result.rc, time.time() - start
        except RuntimeError:  # the SSH session died with the node
            return node, None, time.time() - start

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = {n: (rc, took) for n, rc, took in pool.map(call, [active, passive])}
    assert outcomes[active][0] == 0, outcomes
    assert host_power(passive) == "Off" and host_power(active) == "On", outcomes
    status = fence(active, "status")
    assert (status.rc, status.stdout.strip()) == (0, "off"), status.stderr
    start = time.monotonic()
    again = fence(active, "off")
    assert again.rc == 0 and "already off" in again.stderr, again.stderr
    # No delay and no agent action for a peer already off.
    assert time.monotonic() - start < 10
    # Bring the loser back through the agent and read its fencing log, which
    # survives the power cut; not before the winner's DRBD has noticed the loss (at
    # its ping timeout, up to ~20 s) and fenced: a node booting while fence-peer
    # runs looks like a partition and is powered off again.
    labtopo.wait_for(lambda: settled_alone(active), 180, f"{active} to settle without {passive}")
    result = fence(active, "on")
    assert result.rc == 0, result.stderr
    assert host_power(passive) == "On"
    wait_back(passive, passive_boot)
    assert fence(active, "status").stdout.strip() == "on"
    journal = labtopo.vm(active).check_output("journalctl -t bluemind-ha-fence --no-pager -o cat")
    assert "call: off of peer" in journal and "done on" in journal
    log = labtopo.vm(passive).check_output("cat /var/log/bluemind-ha/fence.log")
    assert "this node is passive" in log and f"waiting {DELAY} s before fencing" in log, log
    # The active node's last decision to fence (its status, "already off" and on
    # calls came after it).
    active_log = labtopo.vm(active).check_output("grep 'off: this node is' /var/log/bluemind-ha/fence.log | tail -n 1")
    assert "this node is active" in active_log, active_log
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"active": active, "active_off_seconds": round(outcomes[active][1], 2), "passive_delay": DELAY,
               "passive_log": [line for line in log.splitlines() if "waiting" in line][-1:]}
    (RESULTS / "fencing-partition.json").write_text(json.dumps(summary))
    # The active node fenced well within the passive node's delay.
    assert outcomes[active][1] < DELAY, outcomes
    assert holder() == active
    assert pairstate.assert_pair_invariants() == active
