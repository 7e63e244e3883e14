#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Enable, start, stop or restart several systemd units of a node in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_units
short_description: Bring several systemd units to their enablement and state in one module run
version_added: 0.1.0
description:
  - Reads every unit of O(units) with one C(systemctl show), then makes the changes with
    at most one C(systemctl) call per kind of change (enable, disable, stop, start,
    restart, reload), in that order.
  - One run replaces a loop of M(ansible.builtin.systemd_service) tasks, each of which
    costs a module run and several C(systemctl) calls per unit.
  - Every unit is checked before anything changes. A unit systemd does not know, or a
    masked unit asked to be enabled or started, fails the module naming it, and nothing
    is changed.
  - Units changed by the same call are handled by systemd as one job transaction, so
    their own ordering dependencies (C(After=), C(Before=)) apply between them.
author:
  - BlueMind HA collection maintainers (@bluemind-ha)
options:
  units:
    description: The units, each at most once.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The unit's full name, with its type suffix, such as V(keepalived.service) or
            V(bluemind-ha-retry.timer).
        type: str
        required: true
      enabled:
        description:
          - Whether the unit starts at boot. Left as it is when not given.
          - A unit without an C([Install]) section (C(static)) counts as enabled and cannot be
            disabled; the module says so rather than pretend.
        type: bool
      state:
        description:
          - V(started) - active (or activating) after the run; started when it is not.
          - V(stopped) - inactive after the run; stopped when it is active.
          - V(restarted) - always restarted (started when inactive).
          - V(reloaded) - always reloaded when active, started when inactive.
          - Left as it is when not given.
          - With neither O(units[].enabled) nor O(units[].state), the unit is only read
            (RV(units) tells its states), whatever they are, even when systemd does not know it.
        type: str
        choices: [started, stopped, restarted, reloaded]
attributes:
  check_mode:
    support: full
    description:
      - Reports what would change and changes nothing.
      - A unit systemd does not know yet (an earlier task would have installed it) is planned
        as a new, disabled and stopped unit, with a warning, instead of failing.
  diff_mode:
    support: none
    description: RV(units) tells what changed; there is no file content to compare.
  platform:
    support: full
    platforms: posix
    description: Runs on systemd hosts with Python's standard library only.
notes:
  - Does not reload systemd's configuration; write units with
    M(bluemind_ha.cluster.ha_files) and O(bluemind_ha.cluster.ha_files#module:daemon_reload=true)
    first.
  - V(restarted) and V(reloaded) always report a change, as
    M(ansible.builtin.systemd_service) does.
seealso:
  - module: ansible.builtin.systemd_service
  - module: bluemind_ha.cluster.ha_files
"""

EXAMPLES = r"""
- name: Start the controller's units now and at boot
  bluemind_ha.cluster.ha_units:
    units:
      - {name: bluemind-ha-shutdown-begin.service, enabled: true, state: started}
      - {name: bluemind-ha-shutdown.service, enabled: true, state: started}
      - {name: bluemind-ha-retry.timer, enabled: true, state: started}
      - {name: bluemind-ha-metrics.timer, enabled: false, state: stopped}
"""

RETURN = r"""
units:
  description: One item per unit of O(units), in its order, with what it was before the run.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The unit.
      type: str
      returned: always
      sample: bluemind-ha-retry.timer
    load_state:
      description: systemd's C(LoadState) before the run (V(not-found) for a unit it does not know).
      type: str
      returned: always
      sample: loaded
    active_state:
      description: systemd's C(ActiveState) before the run.
      type: str
      returned: always
      sample: inactive
    unit_file_state:
      description: systemd's C(UnitFileState) before the run.
      type: str
      returned: always
      sample: disabled
    actions:
      description: What the run did (or would do, in check mode) to the unit, in order.
      type: list
      elements: str
      returned: always
      sample: [enable, start]
    changed:
      description: Whether the unit changed (or would change, in check mode).
      type: bool
      returned: always
      sample: true
changed_units:
  description: The units that changed (or would change), in the order of O(units).
  returned: always
  type: list
  elements: str
  sample: [bluemind-ha-retry.timer]
problems:
  description: When a unit cannot be handled, every such problem, each naming its unit. Nothing was changed.
  returned: failure
  type: list
  elements: str
  sample: ["frobnicate.service: systemd does not know this unit (LoadState not-found): install it first or fix the name"]
"""

from ansible.module_utils.basic import AnsibleModule

# Active enough for "started": systemd_service counts activating as running too.
RUNNING = ("active", "activating", "reloading")
# Unit file states that need no `systemctl enable` for enabled=true.
ENABLED = ("enabled", "static", "generated", "indirect", "alias", "transient")
# The order the changes are made in: boot links first, then the states.
ACTIONS = ("enable", "disable", "stop", "start", "restart", "reload")
PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState")


def parse_show(text):
    """systemctl show's blocks (one per unit, separated by a blank line) as dicts."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, dummy, value = line.partition("=")
        current[key] = value
    if current:
        blocks.append(current)
    return blocks


def plan(unit, found, check_mode=False):
    """(actions, problem) for one unit asked for, from what systemd showed of it."""
    name = unit["name"]
    load, active, file_state = found.get("LoadState", ""), found.get("ActiveState", ""), found.get("UnitFileState", "")
    if unit["enabled"] is None and unit["state"] is None:
        return [], None
    if (load == "not-found" or not load) and check_mode:
        # An earlier task would have installed it: planned as a new, stopped unit.
        load, active, file_state = "loaded", "inactive", "disabled"
    if load == "not-found" or not load:
        return [], f"{name}: systemd does not know this unit (LoadState {load or 'unknown'}): install it first or fix the name"
    masked = load == "masked" or file_state.startswith("masked")
    wants_up = unit["enabled"] is True or unit["state"] in ("started", "restarted", "reloaded")
    if masked and wants_up:
        return [], f"{name}: the unit is masked: unmask it (systemctl unmask {name}) if it should run here"
    if load != "loaded" and not masked:
        return [], f"{name}: systemd could not load the unit (LoadState {load}): see systemctl status {name}"
    actions = []
    if unit["enabled"] is True and file_state not in ENABLED:
        actions.append("enable")
    if unit["enabled"] is False and file_state in ("static", "generated", "indirect", "transient"):
        return [], (f"{name}: cannot be disabled (UnitFileState {file_state}: no [Install] section to undo);"
                    " leave enabled unset or mask it")
    if unit["enabled"] is False and file_state in ("enabled", "enabled-runtime", "alias"):
        actions.append("disable")
    running = active in RUNNING
    state = unit["state"]
    if state == "started" and not running:
        actions.append("start")
    elif state == "stopped" and running:
        actions.append("stop")
    elif state == "restarted":
        actions.append("restart")
    elif state == "reloaded":
        actions.append("reload" if running else "start")
    return actions, None


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "enabled": {"type": "bool"},
                    "state": {"type": "str", "choices": ["started", "stopped", "restarted", "reloaded"]},
                },
            },
        },
        supports_check_mode=True,
    )
    units = module.params["units"]
    names = [u["name"] for u in units]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    bad_names = [n for n in names if "." not in n or n.startswith("-") or any(c.isspace() for c in n)]
    if duplicates or bad_names:
        module.fail_json(msg="ha_units: each unit once, by its full name",
                         problems=[f"{n}: listed more than once" for n in duplicates]
                         + [f"{n!r}: not a full unit name (such as keepalived.service)" for n in bad_names],
                         changed=False, units=[], changed_units=[])
    if not units:
        module.exit_json(changed=False, units=[], changed_units=[])
    systemctl = module.get_bin_path("systemctl", required=True)
    rc, out, err = module.run_command([systemctl, "show", "--property=" + ",".join(PROPERTIES), "--"] + names)
    blocks = parse_show(out)
    if rc != 0 or len(blocks) != len(names):
        module.fail_json(msg=f"systemctl show failed (exit {rc}): {err.strip() or out.strip()[:200]}",
                         changed=False, units=[], changed_units=[])
    # systemctl show answers in the order asked, one block per name.
    results, problems = [], []
    for unit, found in zip(units, blocks):
        actions, problem = plan(unit, found, module.check_mode)
        if problem:
            problems.append(problem)
        if module.check_mode and found.get("LoadState") == "not-found" and actions:
            module.warn(f"{unit['name']} is not installed yet: planned as a new unit (check mode)")
        results.append({"name": unit["name"], "load_state": found.get("LoadState", ""),
                        "active_state": found.get("ActiveState", ""),
                        "unit_file_state": found.get("UnitFileState", ""), "actions": actions,
                        "changed": bool(actions)})
    if problems:
        module.fail_json(msg="ha_units: " + "; ".join(problems), problems=problems, changed=False,
                         units=results, changed_units=[])
    changed_units = [r["name"] for r in results if r["changed"]]
    if not module.check_mode:
        done = False
        for action in ACTIONS:
            todo = [r["name"] for r in results if action in r["actions"]]
            if not todo:
                continue
            rc, out, err = module.run_command([systemctl, action, "--"] + todo)
            if rc != 0:
                # The calls before this one took effect; this one may have in part.
                module.fail_json(msg=f"systemctl {action} {' '.join(todo)} failed (exit {rc}): {err.strip() or out.strip()}",
                                 changed=done, units=results, changed_units=changed_units, failed_action=action)
            done = True
    module.exit_json(changed=bool(changed_units), units=results, changed_units=changed_units)


if __name__ == "__main__":
    main()
