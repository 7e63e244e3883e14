# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only stdout callback: one JSON report of a playbook run (every task's
result per host, and the recap), for the scenarios' checks to read. ansible-core
2.19 no longer ships a json callback, and this one needs no collection."""

from __future__ import annotations

DOCUMENTATION = r"""
name: lab_report
type: stdout
short_description: One JSON report of the run, for the lab's tests
description:
  - Prints a single JSON document at the end of the run, with plays, tasks, per-host results and stats.
author: bluemind_ha.cluster contributors
"""

import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "lab_report"

    def __init__(self):
        super().__init__()
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def _record(self, result, status):
        task = result.task if hasattr(result, "task") else result._task
        host = result.host if hasattr(result, "host") else result._host
        tasks = self.plays[-1]["tasks"]
        if not tasks or tasks[-1]["task"]["id"] != task._uuid:
            tasks.append({"task": {"name": task.get_name(), "id": task._uuid}, "hosts": {}})
        data = dict(result.result if hasattr(result, "result") else result._result)
        data["status"] = status
        tasks[-1]["hosts"][host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        report = {"plays": self.plays,
                  "stats": {host: stats.summarize(host) for host in sorted(stats.processed)}}
        self._display.display(json.dumps(report, default=str))
