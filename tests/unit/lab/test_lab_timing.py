"""The lab's timing callback (molecule/shared/callback_plugins/lab_timing.py): one
line per task with its wall time and the hosts that ran it, a summary by role,
in the lab's log directory; nothing outside a molecule scenario."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

PLUGIN = Path(__file__).resolve().parents[3] / "molecule" / "shared" / "callback_plugins" / "lab_timing.py"


def load():
    spec = importlib.util.spec_from_file_location("lab_timing_under_test", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def task(name, role=None):
    return SimpleNamespace(get_name=lambda: name,
                           _role=SimpleNamespace(get_name=lambda: role) if role else None)


def result(host):
    return SimpleNamespace(_host=SimpleNamespace(get_name=lambda: host))


@pytest.fixture()
def timed(monkeypatch, tmp_path):
    module = load()
    clock = Clock()
    monkeypatch.setattr(module.time, "monotonic", clock)
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    return module, clock, tmp_path


def run(callback, clock):
    callback.v2_playbook_on_task_start(task("Install keepalived", "bluemind_ha.cluster.keepalived"), False)
    clock.now += 12.5
    callback.v2_runner_on_ok(result("node1"))
    callback.v2_runner_on_ok(result("node2"))
    callback.v2_playbook_on_task_start(task("Read the lab's metadata"), False)
    clock.now += 0.5
    callback.v2_runner_on_failed(result("localhost"))
    callback.v2_playbook_on_handler_task_start(task("Reload keepalived", "bluemind_ha.cluster.keepalived"))
    clock.now += 3.0
    callback.v2_runner_on_ok(result("node1"))
    callback.v2_playbook_on_stats(None)


def test_each_task_and_each_role_gets_its_wall_time(timed, monkeypatch):
    module, clock, logs = timed
    monkeypatch.setenv("MOLECULE_SCENARIO_NAME", "drbd")
    run(module.CallbackModule(), clock)
    lines = (logs / "logs" / "timing-drbd.log").read_text().splitlines()
    assert lines[0] == "# run of 16 s, 3 tasks"
    assert lines[1].split() == ["12.50", "bluemind_ha.cluster.keepalived", "Install", "keepalived", "[2]"]
    assert lines[2].split() == ["0.50", "-", "Read", "the", "lab's", "metadata", "[1]"]
    assert lines[3].split() == ["3.00", "bluemind_ha.cluster.keepalived", "Reload", "keepalived", "[1]"]
    # Largest role first; a task that ran on no host is not counted as run.
    assert lines[4].split()[:4] == ["#", "role", "bluemind_ha.cluster.keepalived", "15.5"]
    assert lines[4].endswith("in 2 tasks that ran")
    assert lines[5].split()[:4] == ["#", "role", "-", "0.5"]


def test_a_second_run_appends(timed, monkeypatch):
    module, clock, logs = timed
    monkeypatch.setenv("MOLECULE_SCENARIO_NAME", "san")
    run(module.CallbackModule(), clock)
    run(module.CallbackModule(), clock)
    text = (logs / "logs" / "timing-san.log").read_text()
    assert text.count("# run of") == 2


def test_nothing_is_written_outside_a_scenario(timed, monkeypatch):
    module, clock, logs = timed
    monkeypatch.delenv("MOLECULE_SCENARIO_NAME", raising=False)
    run(module.CallbackModule(), clock)
    assert not (logs / "logs").exists()
