"""The controller's configuration files as the role renders them from the role's
own defaults: the device of each storage method, the path list of each BlueMind
major version, and the secrets kept out of the world-readable file."""
import json
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / "roles" / "controller"


def render(name, **inventory):
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update({"inventory_hostname": "node1", "ansible_play_hosts_all": ["node1", "node2"],
                      "bluemind_ha_storage": "drbd"})
    variables.update(inventory)
    templar = Templar(loader=DataLoader(), variables=variables)
    for key, value in list(variables.items()):
        if isinstance(value, str) and "{{" in value:
            variables[key] = templar.template(trust_as_template(value))
    templar = Templar(loader=DataLoader(), variables=variables)
    return json.loads(templar.template(trust_as_template((ROLE / "templates" / name).read_text())))


@pytest.mark.parametrize("storage,device", [("drbd", "/dev/drbd0"), ("san", "/dev/mapper/bluemind")])
def test_each_storage_method_names_its_device(storage, device):
    conf = render("controller.json.j2", bluemind_ha_storage=storage)
    assert (conf["node"], conf["peer"], conf["storage"], conf["device"]) == ("node1", "node2", storage, device)


@pytest.mark.parametrize("version,present,absent", [
    ("4.9.2000", ["/var/spool/sieve", "/var/lib/cyrus"], []),
    ("5.1.12345", ["/var/spool/cyrus", "/var/lib/postgresql"], ["/var/spool/sieve", "/var/lib/cyrus"]),
])
def test_the_paths_follow_the_deployed_major_version(version, present, absent):
    paths = render("controller.json.j2", bluemind_version=version)["paths"]
    assert all(p in paths for p in present + ["/etc/bm", "/etc/aliases", "/var/spool/bm-filehosting"]), paths
    assert not any(p in paths for p in absent), paths


def test_secrets_stay_in_the_root_only_alert_file():
    secrets = {"controller_alert_smtp_password": "relay-s3cret", "controller_alert_webhook_token": "hook-t0ken"}
    public = json.dumps(render("controller.json.j2", **secrets))
    assert "relay-s3cret" not in public and "hook-t0ken" not in public
    alert = render("alert.json.j2", controller_alert_smtp_host="relay.example.org",
                   controller_alert_email_to=["ops@example.org"], **secrets)
    assert alert["smtp_password"] == "relay-s3cret" and alert["webhook_token"] == "hook-t0ken"
    assert alert["email_from"] == "bluemind-ha@node1" and alert["smtp_port"] == 25


@pytest.mark.parametrize("storage,inventory,grace", [
    ("san", {}, 30),
    ("san", {"san_multipath_no_path_retry": 12, "san_multipath_polling_interval": 10}, 120),
    ("drbd", {"san_multipath_no_path_retry": 12}, 0),
])
def test_the_san_grace_is_the_time_multipath_queues_without_a_path(storage, inventory, grace):
    assert render("controller.json.j2", bluemind_ha_storage=storage, **inventory)["storage_grace"] == grace
