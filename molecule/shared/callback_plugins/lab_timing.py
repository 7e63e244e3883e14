# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only aggregate callback: where a playbook run's time goes. Appends one
line per task (wall seconds from its start to the next task's, role, name,
hosts that ran it) and a summary by role to
LAB_CACHE_DIR/logs/timing-<MOLECULE_SCENARIO_NAME>.log (the lab's log
directory, beside the waits log). Silent outside a molecule scenario."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lab_timing
type: aggregate
short_description: Per-task wall time of a run, for the lab's time budget
description:
  - Appends each task's wall time and a per-role summary to the lab's log directory, one file per molecule scenario.
author: bluemind_ha.cluster contributors
"""

import os
import time
from pathlib import Path

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "lab_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        scenario = os.environ.get("MOLECULE_SCENARIO_NAME")
        logs = Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab")) / "logs"
        self.path = logs / f"timing-{scenario}.log" if scenario else None
        self.current = None
        self.rows = []
        self.started = time.monotonic()
        self.hosts = set()

    def _close(self):
        if self.current is not None:
            name, role, start = self.current
            self.rows.append((time.monotonic() - start, role, name, len(self.hosts)))
        self.current = None
        self.hosts = set()

    def _start(self, task):
        self._close()
        role = task._role.get_name() if task._role else "-"
        self.current = (task.get_name(), role, time.monotonic())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task)

    def _ran(self, result, **kwargs):
        self.hosts.add(result._host.get_name())

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_unreachable = _ran

    def v2_playbook_on_stats(self, stats):
        self._close()
        if not self.path:
            return
        by_role = {}
        for seconds, role, _name, hosts in self.rows:
            total, count = by_role.get(role, (0.0, 0))
            by_role[role] = (total + seconds, count + (1 if hosts else 0))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("# run of %.0f s, %d tasks\n" % (time.monotonic() - self.started, len(self.rows)))
            for seconds, role, name, hosts in self.rows:
                out.write("%7.2f  %-22s %s [%d]\n" % (seconds, role, name, hosts))
            for role, (total, count) in sorted(by_role.items(), key=lambda item: -item[1][0]):
                out.write("# role %-22s %7.1f s in %d tasks that ran\n" % (role, total, count))
