#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge the pair from the two nodes' controller reports: nominal, or what is degraded."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_pair_status
short_description: Say whether a BlueMind HA pair is nominal, from both nodes' controller reports
version_added: 0.1.0
description:
  - Runs on the controller. Reads the report that C(bluemind-ha status --json) printed on
    each node (or the absence of one, for an unreachable or powered-off node) and lists every
    reason the pair is not in its nominal state.
  - Nominal means both nodes answer, exactly one is active (VRRP MASTER, the storage
    mounted, BlueMind C(CORE_STATE_RUNNING)), the other is passive (VRRP BACKUP, nothing
    of BlueMind running), both health checks pass, and the storage is whole (DRBD
    connected with both disks C(UpToDate); SAN keys of both nodes registered).
  - Fails when the pair is degraded, so that monitoring and CI can use the exit status,
    unless O(fail_when_degraded=false).
  - "Problem codes:"
  - C(node_count) - the pair does not have exactly two nodes.
  - C(no_report) - a node did not answer or its controller printed no report.
  - C(no_active) - no node is active.
  - C(two_active) - both nodes say they are active.
  - C(health) - a node's health check fails (its reason is in the message).
  - C(vrrp) - a node's VRRP state does not match its role.
  - C(bluemind) - BlueMind is not C(CORE_STATE_RUNNING) on the active node.
  - C(passive_runs) - a unit of BlueMind runs on the passive node.
  - C(drained) - a node is drained (automatic failover to it suspended).
  - C(suspended) - automatic failover is suspended on a node (an upgrade in progress, or left over).
  - C(paths) - (SAN) a path to the LUN is not active, or the node sees no path.
  - C(replication) - (DRBD) the nodes are not connected, or a disk is not C(UpToDate).
  - C(reservation) - (SAN) a node's key is not registered on the LUN, or the active node does not hold its reservation.
  - C(release_pending) - a deactivation could not release the node's storage (a SAN without a usable path);
    the node's C(bluemind-ha-retry) timer finishes it once it can.
author:
  - BlueMind HA collection maintainers (@bluemind-ha)
options:
  reports:
    description:
      - Inventory name of each node mapped to what C(bluemind-ha status --json) printed
        there (a string or the parsed report), or null when the node did not answer.
    type: dict
    required: true
  fail_when_degraded:
    description: Fail (after returning the verdict) when the pair is not nominal.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Judge the pair
  bluemind_ha.cluster.ha_pair_status:
    reports:
      node1: "{{ hostvars['node1'].bmha_status.stdout | default(omit) }}"
      node2: "{{ hostvars['node2'].bmha_status.stdout | default(omit) }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
nominal:
  description: Whether the pair is in its nominal state.
  returned: always
  type: bool
active:
  description: Inventory name of the active node, or null.
  returned: always
  type: str
problems:
  description: Every reason the pair is degraded, each with a code, the node it concerns and a message.
  returned: always
  type: list
  elements: dict
summary:
  description: One line per node, for people.
  returned: always
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

UNITS_IDLE = ("inactive", "failed", "unknown")


def parse(report):
    if report in (None, ""):
        return None
    if isinstance(report, dict):
        return report
    try:
        value = json.loads(report)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def judge(reports):
    """(problems, active, summary) for a mapping of node name to report (or None)."""
    problems = []

    def problem(code, host, message):
        problems.append({"code": code, "host": host, "message": message})

    if len(reports) != 2:
        problem("node_count", "pair", f"the pair has {len(reports)} node(s), not 2: {sorted(reports)}")
    parsed = {name: parse(report) for name, report in reports.items()}
    summary = []
    for name, report in sorted(parsed.items()):
        if report is None:
            problem("no_report", name, "no status report: the node is down, unreachable, or its controller "
                                       "is not installed (run site.yml, or power the node on)")
            summary.append(f"{name}: no report")
            continue
        summary.append(f"{name}: {report.get('role')} (VRRP {report.get('vrrp')}), health "
                       f"{'ok' if report.get('health', {}).get('ok') else 'failing'}, "
                       f"BlueMind {report.get('bluemind') or '-'}")
    answered = {name: report for name, report in parsed.items() if report is not None}
    actives = sorted(name for name, report in answered.items() if report.get("role") == "active")
    if len(actives) > 1:
        problem("two_active", "pair", f"{' and '.join(actives)} both say they are active: stop BlueMind on one "
                                      "(bluemind-ha deactivate) and read the storage runbook before anything else")
    elif not actives and answered:
        problem("no_active", "pair", "no node is active: BlueMind is not served (see the controller's journal: "
                                     "journalctl -t bluemind-ha)")
    for name, report in sorted(answered.items()):
        active = report.get("role") == "active"
        health = report.get("health", {})
        if not health.get("ok"):
            problem("health", name, f"health check failing: {health.get('why', 'no reason given')}")
        expected = "MASTER" if active else "BACKUP"
        if report.get("vrrp") != expected:
            problem("vrrp", name, f"VRRP {report.get('vrrp')} on the {report.get('role')} node, expected {expected}")
        if active and report.get("bluemind") != "CORE_STATE_RUNNING":
            problem("bluemind", name, f"BlueMind is {report.get('bluemind')}, not CORE_STATE_RUNNING")
        if not active:
            running = sorted(u for u, s in (report.get("units") or {}).items() if s not in UNITS_IDLE)
            if running:
                problem("passive_runs", name, f"the passive node runs {', '.join(running)}")
        if report.get("drained"):
            problem("drained", name, "drained: automatic failover to this node is suspended "
                                     "(run `bluemind-ha undrain` on it when the work is done)")
        if report.get("suspended"):
            problem("suspended", name, "automatic failover is suspended (bluemind-ha suspend, used by the upgrade "
                                       "playbook): run `bluemind-ha resume` on both nodes when the work is done")
        storage = report.get("storage") or {}
        if storage.get("method") == "drbd":
            if (storage.get("connection") != "Connected" or storage.get("disk") != "UpToDate"
                    or storage.get("peer_disk") != "UpToDate"):
                problem("replication", name, f"DRBD connection {storage.get('connection')}, disk {storage.get('disk')},"
                                             f" peer disk {storage.get('peer_disk')}: the peer could not take over "
                                             "without data loss")
        elif storage.get("method") == "san":
            paths = storage.get("paths") or []
            active_paths = storage.get("active_paths", 0)
            if not paths or active_paths < len(paths):
                problem("paths", name, f"{active_paths} of {len(paths)} path(s) to the LUN active: "
                                       "see `multipath -ll` and the SAN runbook")
            if active and storage.get("holder") != name:
                problem("reservation", name, f"the active node does not hold the LUN's reservation (holder: "
                                             f"{storage.get('holder')}): see the SAN runbook")
            if not active and storage.get("present") and not storage.get("registered_here"):
                problem("reservation", name, "this node's key is not registered on the LUN (the peer's takeover "
                                             "preempted it): it registers again by itself once a path is usable; "
                                             "if its paths are active and it stays, run `bluemind-ha-san register` "
                                             "on it")
            elif not (report.get("peer_view") or {}).get("reachable") and parsed.get(report.get("peer")) is None:
                problem("reservation", name, f"the key of {report.get('peer')} is not registered on the LUN: "
                                             "it could not take over")
        if report.get("release_pending"):
            problem("release_pending", name, "a deactivation could not release the storage (see `journalctl -t "
                                             "bluemind-ha`); bluemind-ha-retry.timer finishes it once it can, for a "
                                             "SAN once a path to the LUN is usable again")
    return problems, (actives[0] if len(actives) == 1 else None), summary


def main():
    module = AnsibleModule(
        argument_spec={
            "reports": {"type": "dict", "required": True},
            "fail_when_degraded": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    problems, active, summary = judge(module.params["reports"])
    result = {"changed": False, "nominal": not problems, "active": active, "problems": problems, "summary": summary}
    if problems and module.params["fail_when_degraded"]:
        lines = [f"- [{p['code']}] {p['host']}: {p['message']}" for p in problems]
        module.fail_json(msg=f"the pair is degraded; {len(lines)} problem(s):\n" + "\n".join(lines), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
