"""ha_pair_status driven by data: a nominal pair of reports (DRBD and SAN) must pass,
and each degradation, a change to it, must give its code and no other."""
import copy
import json

import pytest

from ansible_collections.bluemind_ha.cluster.plugins.modules import ha_pair_status


def report(node, peer, role, storage="drbd"):
    """What bluemind-ha status --json prints on a node of a nominal pair."""
    active = role == "active"
    store = ({"method": "drbd", "connection": "Connected", "role": "Primary" if active else "Secondary",
              "disk": "UpToDate", "peer_disk": "UpToDate"} if storage == "drbd"
             else {"method": "san", "holder": node if active else peer, "registered": [node, peer],
                   "present": True, "registered_here": True,
                   "paths": [{"dm_state": "active", "checker": "ready"}] * 2, "active_paths": 2})
    return {"node": node, "peer": peer, "role": role, "vrrp": "MASTER" if active else "BACKUP", "drained": False,
            "storage": store, "mounted": active, "exposed": [],
            "units": {"postgresql.service": "active" if active else "inactive",
                      "bluemind.target": "active" if active else "inactive"},
            "bluemind": "CORE_STATE_RUNNING" if active else None, "transitions": [],
            "peer_view": {"node": peer, "reachable": True, "holds_storage": not active},
            "health": {"ok": True, "why": f"{role}"}}


def pair(storage="drbd"):
    return {"node1": report("node1", "node2", "active", storage), "node2": report("node2", "node1", "passive", storage)}


@pytest.mark.parametrize("storage", ["drbd", "san"])
def test_a_nominal_pair_has_no_problem(storage):
    problems, active, summary = ha_pair_status.judge(pair(storage))
    assert problems == [] and active == "node1"
    assert summary[0].startswith("node1: active (VRRP MASTER), health ok, BlueMind CORE_STATE_RUNNING")


def test_reports_as_printed_json_strings_are_read():
    problems, active, dummy = ha_pair_status.judge({n: json.dumps(r) for n, r in pair().items()})
    assert problems == [] and active == "node1"


def degrade(change, storage="drbd"):
    reports = copy.deepcopy(pair(storage))
    change(reports)
    return reports


CASES = {
    "peer powered off": (lambda r: r.update(node2=None), ["no_report"]),
    "peer printed garbage": (lambda r: r.update(node2="Traceback (most recent call last)"), ["no_report"]),
    "a third node": (lambda r: r.update(node3=copy.deepcopy(r["node2"])), ["node_count"]),
    "nobody active": (lambda r: (r["node1"].update(role="passive", vrrp="BACKUP", bluemind=None),
                                 r["node1"]["units"].update({"postgresql.service": "inactive",
                                                             "bluemind.target": "inactive"})), ["no_active"]),
    "both active": (lambda r: r["node2"].update(role="active", vrrp="MASTER", bluemind="CORE_STATE_RUNNING"),
                    ["two_active"]),
    "failing health": (lambda r: r["node2"]["health"].update(ok=False, why="DRBD disk Outdated"), ["health"]),
    "passive in FAULT": (lambda r: r["node2"].update(vrrp="FAULT"), ["vrrp"]),
    "BlueMind starting": (lambda r: r["node1"].update(bluemind="CORE_STATE_STARTING"), ["bluemind"]),
    "postgres on the passive": (lambda r: r["node2"]["units"].update({"postgresql.service": "active"}),
                                ["passive_runs"]),
    "drained": (lambda r: r["node2"].update(drained=True), ["drained"]),
    "suspended": (lambda r: (r["node1"].update(suspended=True), r["node2"].update(suspended=True)),
                  ["suspended", "suspended"]),
    "replication cut": (lambda r: (r["node1"]["storage"].update(connection="WFConnection", peer_disk="DUnknown"),
                                   r["node2"]["storage"].update(connection="StandAlone")),
                        ["replication", "replication"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_degradation_gives_its_code(name):
    change, expected = CASES[name]
    problems = ha_pair_status.judge(degrade(change))[0]
    assert sorted(p["code"] for p in problems) == sorted(expected), problems
    assert all(p["message"] for p in problems)


def test_a_san_passive_node_without_its_key_is_degraded_with_the_fix():
    # What the passive node reports of itself after the peer's takeover preempted
    # its key; the active node sees the same key missing (peer_view): one problem.
    reports = degrade(lambda r: (r["node2"]["storage"].update(registered_here=False, registered=["node1"]),
                                 r["node1"]["peer_view"].update(reachable=False),
                                 r["node1"]["storage"].update(registered=["node1"])), "san")
    problems = ha_pair_status.judge(reports)[0]
    assert [(p["code"], p["host"]) for p in problems] == [("reservation", "node2")]
    assert "registers again by itself" in problems[0]["message"]
    assert "bluemind-ha-san register" in problems[0]["message"]


def test_a_san_peer_without_a_report_and_without_its_key_is_named_by_the_active_node():
    reports = degrade(lambda r: (r.update(node2=None), r["node1"]["peer_view"].update(reachable=False)), "san")
    problems = ha_pair_status.judge(reports)[0]
    assert sorted((p["code"], p["host"]) for p in problems) == [("no_report", "node2"), ("reservation", "node1")]


@pytest.mark.parametrize("storage", ["drbd", "san"])
def test_a_pending_release_is_degraded(storage):
    reports = degrade(lambda r: r["node2"].update(release_pending={"since": 1.0, "reason": "vrrp-not-master"}),
                      storage)
    problems = ha_pair_status.judge(reports)[0]
    assert [(p["code"], p["host"]) for p in problems] == [("release_pending", "node2")]
    assert "bluemind-ha-retry.timer" in problems[0]["message"]


@pytest.mark.parametrize("active_paths,listed", [(1, 2), (0, 0)], ids=["one path lost", "no path"])
def test_a_san_node_with_a_path_down_is_degraded(active_paths, listed):
    reports = degrade(lambda r: r["node2"]["storage"].update(
        active_paths=active_paths, paths=[{"dm_state": "failed", "checker": "faulty"}] * listed), "san")
    problems = ha_pair_status.judge(reports)[0]
    assert [(p["code"], p["host"]) for p in problems] == [("paths", "node2")]
    assert f"{active_paths} of {listed}" in problems[0]["message"]


@pytest.mark.parametrize("holder", [None, "node2"], ids=["nobody", "the passive node"])
def test_a_san_active_node_without_the_reservation_is_degraded(holder):
    reports = degrade(lambda r: r["node1"]["storage"].update(holder=holder), "san")
    problems = ha_pair_status.judge(reports)[0]
    assert [(p["code"], p["host"]) for p in problems] == [("reservation", "node1")]
    assert f"holder: {holder}" in problems[0]["message"]
