"""The controller's configuration files as the role renders them from the role's
own defaults: the device of each storage method, the path list of each BlueMind
major version, and the secrets kept out of the world-readable file."""
import json
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

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


def role_defaults(**inventory):
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update({"inventory_hostname": "node1", "ansible_play_hosts_all": ["node1", "node2"],
                      "bluemind_ha_storage": "drbd", "bluemind_version": "5.1.100"})
    variables.update(inventory)
    return variables


def installed_unit(path, **inventory):
    """A unit of the controller's ha_files task, rendered with the role's defaults."""
    tasks = yaml.safe_load((ROLE / "tasks" / "install.yml").read_text())
    files = next(t for t in tasks if "bluemind_ha.cluster.ha_files" in t)["bluemind_ha.cluster.ha_files"]["files"]
    entry = next(f for f in files if f["path"] == path)
    return Templar(loader=DataLoader(), variables=role_defaults(**inventory)).template(trust_as_template(entry["content"]))


def test_the_metrics_timer_writes_the_textfile_every_interval():
    service = installed_unit("/etc/systemd/system/bluemind-ha-metrics.service",
                             controller_metrics_path="/srv/textfile/bluemind_ha.prom")
    assert "ExecStart=/usr/local/sbin/bluemind-ha status --prometheus --output /srv/textfile/bluemind_ha.prom" in service
    assert "Type=oneshot" in service
    timer = installed_unit("/etc/systemd/system/bluemind-ha-metrics.timer", controller_metrics_interval=45)
    assert "OnUnitActiveSec=45" in timer and "WantedBy=timers.target" in timer


@pytest.mark.parametrize("overrides,problem", [
    ({}, None),
    ({"controller_metrics_path": "relative/bluemind_ha.prom"}, "controller_metrics_path"),
    ({"controller_metrics_path": "/var/lib/node exporter/x.prom"}, "controller_metrics_path"),
    ({"controller_metrics_path": "/var/lib/prometheus/"}, "controller_metrics_path"),
    ({"controller_metrics_interval": 5}, "controller_metrics_interval"),
    ({"controller_metrics_interval": "often"}, "controller_metrics_interval"),
    # Issue 29, item 4: no alert secret in clear on the wire.
    ({"controller_alert_webhook_url": "http://hooks.example.org/x", "controller_alert_webhook_token": "t0ken"},
     "controller_alert_webhook_token is set but controller_alert_webhook_url is not https://"),
    ({"controller_alert_webhook_url": "https://hooks.example.org/x", "controller_alert_webhook_token": "t0ken"}, None),
    ({"controller_alert_webhook_url": "http://hooks.example.org/x"}, None),
    ({"controller_alert_smtp_host": "relay.example.org", "controller_alert_smtp_username": "ha"},
     "controller_alert_smtp_username is set without controller_alert_smtp_starttls"),
    ({"controller_alert_smtp_host": "relay.example.org", "controller_alert_smtp_username": "ha",
      "controller_alert_smtp_starttls": True}, None),
    ({"controller_alert_ca_file": "site-ca.pem"}, "controller_alert_ca_file"),
    ({"controller_alert_ca_file": "/etc/ssl/certs/site-ca.pem"}, None),
    # Issue 29, item 8: a major version without data paths (a Jinja KeyError before).
    ({"bluemind_version": "6.0.12"}, "bluemind_version 6.0.12 is BlueMind 6: the controller knows the data paths"),
    ({"bluemind_version": "4.9.2000"}, None),
    ({"bluemind_version": "5.1.12345"}, None),
])
def test_validation_refuses_metrics_and_alert_settings_it_cannot_use(overrides, problem):
    task = yaml.safe_load((ROLE / "tasks" / "validate.yml").read_text())[0]
    variables = role_defaults(**overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    for key, value in list(variables.items()):
        if isinstance(value, str) and "{{" in value:
            variables[key] = templar.template(trust_as_template(value))

    def trusted(value):
        if isinstance(value, dict):
            return {k: trusted(v) for k, v in value.items()}
        return trust_as_template(value) if isinstance(value, str) else value
    variables.update(trusted(task["vars"]))
    templar = Templar(loader=DataLoader(), variables=variables)
    problems = templar.template(trust_as_template("{{ __controller_problems }}"))
    if problem is None:
        assert problems == [], problems
    else:
        assert len(problems) == 1 and problems[0].startswith(problem), problems
