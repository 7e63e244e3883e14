"""The keepalived role's configuration on the pair (valid, unicast, root-only), and
bad input to it refused through the site playbook before any change on either
node (the variable named in the failure, a secret never in the output). drbd
scenario only: neither depends on the storage method, and each bad input is a
site run (about 30 s under emulation)."""
import json

import pytest

import labtopo

NODES = labtopo.members("bluemind_ha")


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


def test_configuration_is_valid_unicast_and_root_only():
    for node in NODES:
        host = labtopo.vm(node)
        conf = host.file("/etc/keepalived/keepalived.conf")
        assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o600)
        assert host.run("/etc/keepalived/bluemind-ha/vrrp config-test /etc/keepalived/keepalived.conf").rc == 0
        text = conf.content_string
        peer_address = labtopo.host_vars(other(node))["bluemind_ha_address"]
        assert f"unicast_peer {{\n        {peer_address}\n    }}" in text
        assert "nopreempt" in text and "state BACKUP" in text and "enable_script_security" in text
        for path in ("/etc/keepalived/bluemind-ha", "/etc/keepalived/bluemind-ha/vrrp"):
            f = host.file(path)
            assert (f.user, f.mode & 0o022) == ("root", 0), f"{node}: {path} is writable by non-root"
        user = host.user("keepalived_script")
        assert user.exists and user.shell == "/usr/sbin/nologin" and user.uid < 1000


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return labtopo.write_inventory(tmp_path_factory.mktemp("keepalived") / "hosts.yml")


@pytest.mark.parametrize("extra_vars,variable", [
    ({"keepalived_router_id": 256}, "keepalived_router_id"),
    ({"keepalived_auth_pass": "ninechars"}, "keepalived_auth_pass"),
    ({"keepalived_priority": 120}, "keepalived_priority"),
    ({"bluemind_ha_vip": "192.168.70.100/24"}, "vip_outside_subnet"),
    # Issue 29: the former standing consent to erase, with a label change that a
    # re-run would once have applied by wiping; the live DRBD disk stays as it is.
    ({"drbd_overwrite_signatures": True, "drbd_filesystem_label": "relabelled"},
     "drbd_overwrite_signatures is no longer supported"),
], ids=["router id 256", "password of 9 characters", "equal priorities", "floating IP outside the subnet",
        "standing consent to erase the storage"])
def test_bad_input_is_refused_before_any_change(inventory, extra_vars, variable):
    report = labtopo.run_playbook("bluemind_ha.cluster.site", inventory, extra_vars)
    assert report["rc"] != 0
    assert all(report["stats"][n]["changed"] == 0 for n in NODES), report["stats"]
    failures = [r.get("msg", "") for name, host, r in labtopo.task_results(report) if r["status"] == "failed"]
    assert any(variable in str(msg) for msg in failures), failures
    # The secret never reaches the output, even in the failure.
    if "keepalived_auth_pass" in extra_vars:
        assert extra_vars["keepalived_auth_pass"] not in json.dumps(report)
    # Refused in the preflight play: no task of the keepalived role's install ran.
    assert not any("Install keepalived" in name for name, host, r in labtopo.task_results(report))
