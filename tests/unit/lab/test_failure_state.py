"""molecule/shared/tests/failure_state.py: what a failed lab check keeps of each
VM (the checks themselves need the lab's VMs: `make test`)."""
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "molecule" / "shared" / "tests"))
import failure_state  # noqa: E402  pylint: disable=wrong-import-position

pytest_plugins = ["pytester"]

STATE = """--- status
node2: active (VRRP MASTER), BlueMind CORE_STATE_RUNNING
--- journal (this boot, last 20 min)
Nov 29 11:33:05.100001 node2 systemd[1]: Started session-12.scope - Session 12 of User root.
Nov 29 11:33:06.200002 node2 Keepalived_vrrp[640]: (VI_BLUEMIND) Entering MASTER STATE
Nov 29 11:33:06.300003 node2 bluemind-ha[900]: activate: step=claim outcome=ok seconds=0.6
Nov 29 11:33:06.400004 node2 sshd[901]: Accepted publickey for root
Nov 29 11:33:07.500005 node2 kernel: critical nexus error, dev sdb
Nov 29 11:33:08.600006 node2 bluemind-ha-san[902]: claim: node2 preempted node1
"""


def test_the_excerpt_keeps_the_status_and_only_the_ha_stack_lines():
    text = failure_state.ha_excerpt(STATE)
    assert "node2: active (VRRP MASTER)" in text
    assert "Entering MASTER STATE" in text and "step=claim" in text and "critical nexus" in text
    assert "preempted node1" in text
    assert "systemd[1]" not in text and "sshd" not in text
    assert "(last 60 of 4)" in text


def test_the_excerpt_keeps_the_last_lines_when_there_are_more():
    text = failure_state.ha_excerpt(STATE, limit=2)
    assert "(last 2 of 4)" in text
    assert "critical nexus" in text and "preempted node1" in text
    assert "Entering MASTER STATE" not in text


def test_record_keeps_each_vm_whole_and_returns_the_excerpts(tmp_path, monkeypatch):
    monkeypatch.setattr(failure_state.labtopo, "LOGS", tmp_path)
    monkeypatch.setattr(failure_state.labtopo, "lab_name", lambda: "molecule-san")
    monkeypatch.setattr(failure_state.labtopo, "platforms", lambda: [{"name": "node1"}, {"name": "node2"}])
    monkeypatch.setattr(failure_state, "vm_state", lambda name: STATE.replace("node2", name))
    excerpt = failure_state.record("tests/test_keepalived.py::test_public_link_loss[active]")
    directory = tmp_path / "failures-molecule-san" / "test_public_link_loss_active_"
    assert (directory / "node1.log").read_text() == STATE.replace("node2", "node1")
    assert "sshd" in (directory / "node2.log").read_text()
    assert "===== node1" in excerpt and "===== node2" in excerpt and str(directory) in excerpt
    # The host's load and the labs on it at the failure come first (labctl's host_load).
    assert excerpt.startswith("host at the failure: load average ") and " lab(s) with " in excerpt.splitlines()[0]


def test_a_vm_that_does_not_answer_is_said_so(monkeypatch):
    monkeypatch.setattr(failure_state.labtopo, "ssh_argv", lambda name, command: ["ssh", name])

    def unreachable(*args, **kwargs):
        return subprocess.CompletedProcess(args, 255, "", "ssh: connect to host 127.0.0.1 port 2222: Connection refused")
    monkeypatch.setattr(failure_state.subprocess, "run", unreachable)
    assert "unreachable: ssh: connect" in failure_state.vm_state("node1")

    def hangs(*args, **kwargs):
        raise subprocess.TimeoutExpired("ssh", 90)
    monkeypatch.setattr(failure_state.subprocess, "run", hangs)
    monkeypatch.setattr(failure_state, "SILENT", set())
    assert failure_state.vm_state("node1") == "(no answer within 90 s)\n"
    # A VM that hung once is not waited for again at the next failed check.
    monkeypatch.setattr(failure_state.subprocess, "run", lambda *a, **k: pytest.fail("asked again"))
    assert "not asked again" in failure_state.vm_state("node1")


def test_the_hook_adds_the_lab_state_to_a_failed_check_only(pytester, monkeypatch):
    monkeypatch.setattr(failure_state, "record", lambda nodeid: f"state of the lab for {nodeid}\n")
    pytester.makepyfile(test_two="def test_fails():\n    assert False\n\ndef test_passes():\n    pass\n")
    result = pytester.runpytest_inprocess(plugins=[failure_state])
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*the lab at the failure (call)*", "state of the lab for test_two.py::test_fails"])
    assert "test_passes" not in "".join(line for line in result.stdout.lines if "state of the lab" in line)
