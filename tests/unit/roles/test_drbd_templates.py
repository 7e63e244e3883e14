"""The DRBD resource file and the command's configuration the role renders, for
IPv4 and IPv6 replication links and both fencing modes. drbdadm itself checks
the file in the lab (the template task's validate)."""
import json
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

TEMPLATES = Path(__file__).resolve().parents[3] / "roles" / "drbd" / "templates"


def render(name, **overrides):
    hostvars = {
        "node1": {"bluemind_ha_drbd_disk": "/dev/disk/by-id/virtio-drbd", "bluemind_ha_replication_address": "10.60.0.11",
                  "bluemind_ha_address": "192.168.60.11", "preflight_node_info": {"ha_node": {"hostname": "bm-a"}}},
        "node2": {"bluemind_ha_drbd_disk": "/dev/sdb", "bluemind_ha_replication_address": "10.60.0.12",
                  "bluemind_ha_address": "192.168.60.12", "preflight_node_info": {"ha_node": {"hostname": "bm-b"}}},
    }
    variables = {
        "ansible_managed": "managed", "inventory_hostname": "node1", "ansible_play_hosts_all": ["node2", "node1"],
        "hostvars": hostvars, "drbd_resource": "bluemind", "drbd_minor": 0, "drbd_port": 7789,
        "drbd_shared_secret": "s3cret-s3cret-s3cret", "drbd_fencing": "stonith", "drbd_timeout": 60,
        "drbd_ping_interval": 10, "drbd_ping_timeout": 5, "drbd_connect_interval": 10,
        "drbd_resync_min_rate": "10M", "drbd_resync_max_rate": "100M", "drbd_al_extents": 1237,
        "drbd_outdate_port": 7790,
        "drbd_alert_command": "", "drbd_promote_timeout": 180, "drbd_fence_timeout": 150,
        "drbd_outdate_timeout": 3, "drbd_outdate_attempts": 2, "drbd_handover_wait": 30, "drbd_handover_window": 120,
        **hostvars["node1"],
    }
    for key, value in overrides.items():
        if key == "hostvars":
            for node, values in value.items():
                hostvars[node].update(values)
        else:
            variables[key] = value
    template = (TEMPLATES / name).read_text()
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(template))


def host_block(text, hostname):
    start = text.index(f"    on {hostname} {{")
    return text[start:text.index("    }\n", start)]


def test_resource_is_protocol_c_authenticated_and_fenced_with_stonith():
    text = render("bluemind.res.j2")
    assert "protocol C;" in text and 'shared-secret "s3cret-s3cret-s3cret";' in text
    assert "fencing resource-and-stonith;" in text
    assert 'fence-peer "/usr/local/sbin/bluemind-ha-drbd fence-peer";' in text
    # No split-brain policy that discards data a node wrote.
    for policy in ("discard-secondary", "discard-younger-primary", "discard-older-primary", "discard-least-changes",
                   "call-pri-lost-after-sb"):
        assert policy not in text
    assert "after-sb-0pri discard-zero-changes;" in text and "after-sb-2pri disconnect;" in text


def test_each_node_is_named_as_the_kernel_knows_it_with_its_own_disk():
    text = render("bluemind.res.j2")
    first = host_block(text, "bm-a")
    assert "disk /dev/disk/by-id/virtio-drbd;" in first and "address ipv4 10.60.0.11:7789;" in first
    second = host_block(text, "bm-b")
    assert "disk /dev/sdb;" in second and "address ipv4 10.60.0.12:7789;" in second
    assert text.index("on bm-a") < text.index("on bm-b")


def test_ipv6_replication_addresses_are_bracketed():
    text = render("bluemind.res.j2", hostvars={"node1": {"bluemind_ha_replication_address": "fd00:61::11"},
                                               "node2": {"bluemind_ha_replication_address": "fd00:61::12"}})
    assert "address ipv6 [fd00:61::11]:7789;" in host_block(text, "bm-a")


@pytest.mark.parametrize("mode,policy", [("stonith", "resource-and-stonith"), ("outdate", "resource-only")])
def test_fencing_mode_selects_the_drbd_policy(mode, policy):
    assert f"fencing {policy};" in render("bluemind.res.j2", drbd_fencing=mode)


def test_command_configuration_names_the_peer_and_its_public_address():
    conf = json.loads(render("drbd.json.j2"))
    assert (conf["node"], conf["peer"], conf["peer_address"]) == ("node1", "node2", "192.168.60.12")
    assert conf["listen_address"] == "192.168.60.11" and conf["device"] == "/dev/drbd0"
    assert conf["secret"] == "s3cret-s3cret-s3cret" and conf["fencing"] == "stonith"
