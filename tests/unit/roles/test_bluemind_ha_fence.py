"""The fence command's decisions, without a controller: when it waits, when it
acts, which exit code each failure gives. The lab's drbd scenario runs it
against the Redfish test doubles with the real fence agent."""
import json
import time
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "roles" / "fencing" / "files" / "bluemind_ha_fence.py"


@pytest.fixture()
def fence(tmp_path, monkeypatch, load_program):
    module = load_program(SOURCE)
    monkeypatch.setattr(module, "LOG", str(tmp_path / "log" / "fence.log"))
    monkeypatch.setattr(module, "VRRP_STATE", str(tmp_path / "vrrp-state"))
    conf = {"peer": "node1", "type": "redfish", "address": "10.0.2.100", "port": 443, "username": "admin",
            "password": "s3cret", "tls": "insecure", "systems_uri": "", "timeout": 60, "connect_timeout": 10,
            "passive_delay": 20, "takeover_window": 10}
    (tmp_path / "fence.json").write_text(json.dumps(conf))
    module.test_config = str(tmp_path / "fence.json")
    module.test_dir = tmp_path
    module.agent_calls = []
    module.sleeps = []
    monkeypatch.setattr(module.time, "sleep", module.sleeps.append)
    return module


def vrrp(fence, state, age):
    (fence.test_dir / "vrrp-state").write_text(f"{state} {time.time() - age}\n")


def use(monkeypatch, fence, power="on", agent_rc=0, probe_error=None):
    def probe(conf):
        if probe_error:
            raise probe_error
        return power

    def agent(conf, action):
        fence.agent_calls.append(action)
        return agent_rc, "Success" if agent_rc == 0 else "Failed: Timed out waiting to power OFF"
    monkeypatch.setattr(fence, "redfish_probe", probe)
    monkeypatch.setattr(fence, "agent", agent)


def test_active_node_fences_at_once(fence, monkeypatch):
    use(monkeypatch, fence)
    vrrp(fence, "MASTER", 60)
    assert fence.main(["--config", fence.test_config, "off"]) == fence.OK
    assert fence.sleeps == [] and fence.agent_calls == ["off"]
    assert "this node is active" in (fence.test_dir / "log" / "fence.log").read_text()


@pytest.mark.parametrize("state,age", [("BACKUP", 60), ("MASTER", 3), ("FAULT", 60)])
def test_passive_or_just_promoted_node_waits_first(fence, monkeypatch, state, age):
    use(monkeypatch, fence)
    vrrp(fence, state, age)
    assert fence.main(["--config", fence.test_config, "off"]) == fence.OK
    assert fence.sleeps == [20] and fence.agent_calls == ["off"]
    assert "waiting 20 s before fencing node1" in (fence.test_dir / "log" / "fence.log").read_text()


def test_peer_already_off_is_success_without_delay_or_agent(fence, monkeypatch):
    use(monkeypatch, fence, power="off")
    vrrp(fence, "BACKUP", 60)
    assert fence.main(["--config", fence.test_config, "off"]) == fence.OK
    assert fence.sleeps == [] and fence.agent_calls == []


def test_status_prints_the_state(fence, monkeypatch, capsys):
    use(monkeypatch, fence, power="off")
    assert fence.main(["--config", fence.test_config, "status"]) == fence.OK
    assert capsys.readouterr().out.strip() == "off"
    assert fence.agent_calls == []


@pytest.mark.parametrize("code", ["UNREACHABLE", "CREDENTIALS"])
def test_controller_errors_keep_their_exit_code(fence, monkeypatch, code):
    use(monkeypatch, fence, probe_error=fence.FenceError(getattr(fence, code), "controller says no"))
    assert fence.main(["--config", fence.test_config, "off"]) == getattr(fence, code)
    assert fence.agent_calls == []


def test_agent_timeout_is_exit_5(fence, monkeypatch):
    use(monkeypatch, fence, agent_rc=1)
    vrrp(fence, "MASTER", 60)
    assert fence.main(["--config", fence.test_config, "off"]) == fence.TIMEOUT


def test_bad_usage_and_config(fence, tmp_path):
    assert fence.main(["--config", fence.test_config, "explode"]) == fence.USAGE
    (tmp_path / "bad.json").write_text('{"peer": "node1"}')
    assert fence.main(["--config", str(tmp_path / "bad.json"), "status"]) == fence.USAGE


def test_the_password_never_reaches_the_log(fence, monkeypatch):
    use(monkeypatch, fence)
    vrrp(fence, "MASTER", 60)
    fence.main(["--config", fence.test_config, "off"])
    assert "s3cret" not in (fence.test_dir / "log" / "fence.log").read_text()
