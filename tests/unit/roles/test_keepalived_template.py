"""The keepalived configuration the role renders, for the cases the lab's
scenario does not deploy (dual stack, authentication, multicast, preemption).
The drbd scenario checks the IPv4 case with keepalived itself."""
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

TEMPLATE = Path(__file__).resolve().parents[3] / "roles" / "keepalived" / "templates" / "keepalived.conf.j2"
V4 = {"address": "192.168.60.100", "prefix": 24, "family": "ipv4", "network": "192.168.60.0/24"}
V6 = {"address": "fd00:60::100", "prefix": 64, "family": "ipv6", "network": "fd00:60::/64"}


ROLE_DEFAULTS = yaml.safe_load((TEMPLATE.parents[1] / "defaults" / "main.yml").read_text())
SCHEDULING = ("keepalived_nice", "keepalived_realtime_priority", "keepalived_realtime_limit", "keepalived_lock_memory")


def render(vips, **overrides):
    variables = {
        "ansible_managed": "managed", "inventory_hostname": "node1", "ansible_play_hosts_all": ["node1", "node2"],
        "bluemind_ha_interface": "eth1", "keepalived_script_user": "keepalived_script",
        "keepalived_check_interval": 2, "keepalived_check_timeout": 10, "keepalived_check_fall": 2,
        "keepalived_check_rise": 2, "keepalived_track_uplink": [], "keepalived_uplink_interval": 2,
        "keepalived_uplink_fall": 3, "keepalived_uplink_rise": 2, "keepalived_preempt": False,
        "keepalived_router_id": 51, "keepalived_router_id6": 52, "keepalived_effective_priority": 150,
        "keepalived_advert_int": 1, "keepalived_unicast": True, "keepalived_garp_delay": 1,
        "keepalived_garp_repeat": 3, "keepalived_garp_refresh": 60,
        "__keepalived_verdict_file": "/run/bluemind-ha/health/verdict",
        "preflight_pair": {"vips": vips, "addresses_by_family": {
            "ipv4": {"node1": "192.168.60.11", "node2": "192.168.60.12"},
            "ipv6": {"node1": "fd00:60::11", "node2": "fd00:60::12"}}},
    }
    # The VRRP process's scheduling as the role ships it.
    variables.update({key: ROLE_DEFAULTS[key] for key in SCHEDULING})
    variables.update(overrides)
    # Ansible's own templating, as the template module renders the file.
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(TEMPLATE.read_text()))


def instance(text, name):
    start = text.index(f"vrrp_instance {name} {{")
    return text[start:text.index("\n}\n", start)]


def test_ipv4_instance_is_unicast_backup_nopreempt():
    text = render([V4])
    block = instance(text, "BLUEMIND_V4")
    assert "state BACKUP" in block and "nopreempt" in block and "priority 150" in block
    assert "unicast_src_ip 192.168.60.11" in block and "        192.168.60.12\n" in block
    # Adverts from any other source are dropped (issue 29: forged priority 255).
    assert "\n    check_unicast_src\n" in block
    assert "192.168.60.100/24 dev eth1" in block
    assert 'notify "/etc/keepalived/bluemind-ha/vrrp notify" root' in block
    assert "vrrp_sync_group" not in text and "authentication" not in block


def test_dual_stack_has_a_v3_instance_and_a_sync_group_notified_once():
    text = render([V4, V6], keepalived_auth_pass="secret")
    v6 = instance(text, "BLUEMIND_V6")
    assert "version 3" in v6 and "virtual_router_id 52" in v6
    assert "unicast_src_ip fd00:60::11" in v6 and "fd00:60::12" in v6 and "check_unicast_src" in v6
    assert "fd00:60::100/64 dev eth1" in v6
    # VRRPv3 has no authentication; the IPv4 instance keeps it.
    assert "authentication" not in v6 and "auth_pass secret" in instance(text, "BLUEMIND_V4")
    assert "vrrp_sync_group BLUEMIND" in text and text.count('vrrp notify" root') == 1


@pytest.mark.parametrize("overrides,present,absent", [
    ({"keepalived_unicast": False}, [], ["unicast_src_ip", "unicast_peer", "check_unicast_src"]),
    ({"keepalived_preempt": True}, ["state BACKUP"], ["nopreempt"]),
    ({"keepalived_track_uplink": ["192.168.60.1"]},
     ["vrrp_script bluemind_ha_uplink", "track_script {\n        bluemind_ha_uplink\n"], []),
    ({}, [], ["vrrp_script", "track_script"]),
])
def test_options(overrides, present, absent):
    text = render([V4], **overrides)
    for snippet in present:
        assert snippet in text
    for snippet in absent:
        assert snippet not in text


def test_the_health_verdict_is_a_tracked_file_that_fails_when_missing():
    """No process per check: keepalived tracks the watcher's file. weight 0 reverse:
    1 is healthy; 0, garbage and a missing file (keepalived reads those as 0) are
    FAULT (keepalived 2.2.7, trackers/track_file.c and vrrp/vrrp_track.c)."""
    text = render([V4, V6])
    start = text.index("track_file bluemind_ha_health {")
    block = text[start:text.index("\n}\n", start)]
    assert 'file "/run/bluemind-ha/health/verdict"' in block and "weight 0 reverse" in block
    assert "init_file" not in block
    for name in ("BLUEMIND_V4", "BLUEMIND_V6"):
        assert "track_file {\n        bluemind_ha_health\n    }" in instance(text, name)


def global_defs(text):
    start = text.index("global_defs {")
    return text[start:text.index("\n}\n", start)]


def test_vrrp_process_is_favoured_by_nice_and_locked_in_memory_by_default():
    block = global_defs(render([V4]))
    assert "vrrp_priority -15" in block and "vrrp_no_swap" in block
    # keepalived's real-time mode kills its VRRP process at a reload (it restores an
    # RLIMIT_RTTIME it never saved): off unless asked for.
    assert "vrrp_rt_priority" not in block and "vrrp_rlimit_rttime" not in block


def test_real_time_when_asked_replaces_the_nice_value():
    block = global_defs(render([V4], keepalived_realtime_priority=10, keepalived_nice=0))
    # keepalived's own default bound (10 ms) killed the VRRP process at every start in the lab.
    assert "vrrp_rt_priority 10" in block and "vrrp_rlimit_rttime 1000000" in block
    assert "vrrp_priority " not in block


def test_nice_and_memory_lock_can_be_turned_off():
    block = global_defs(render([V4], keepalived_nice=0, keepalived_lock_memory=False))
    assert "vrrp_priority" not in block and "vrrp_rt_priority" not in block and "vrrp_no_swap" not in block


@pytest.mark.parametrize("nice,priority,limit,accepted", [
    (-15, 0, 1000, True), (0, 1, 1000, True), (0, 10, 1000, True), (0, 99, 1000, True), (0, 100, 1000, False),
    (0, -1, 1000, False), (0, 10, 100, True), (0, 10, 60000, True), (0, 10, 10, False), (0, 10, 60001, False),
    (-20, 0, 1000, True), (19, 0, 1000, True), (-21, 0, 1000, False), (20, 0, 1000, False),
    (-15, 10, 1000, False),
])
def test_validation_bounds_the_vrrp_process_scheduling(nice, priority, limit, accepted):
    tasks = yaml.safe_load((TEMPLATE.parents[1] / "tasks" / "validate.yml").read_text())
    task = next(t for t in tasks if t["name"] == "Check the scheduling of the VRRP process")
    variables = {"keepalived_nice": nice, "keepalived_realtime_priority": priority, "keepalived_realtime_limit": limit}
    templar = Templar(loader=DataLoader(), variables=variables)
    results = [templar.template(trust_as_template("{{ " + cond + " }}")) for cond in task["ansible.builtin.assert"]["that"]]
    assert all(results) is accepted
    for name in variables:
        assert name in task["ansible.builtin.assert"]["fail_msg"]


VRRP = TEMPLATE.parent / "vrrp.j2"


def vrrp_script(tmp_path: Path) -> Path:
    """The vrrp script as the role renders it, with its run directory moved into
    tmp_path and a notify command that records what it was asked."""
    variables = {"ansible_managed": "managed", "keepalived_script_user": "keepalived_script",
                 "keepalived_check_command": "true", "keepalived_track_uplink": [],
                 "keepalived_notify_command": f"echo >> {tmp_path}/applied", "keepalived_check_timeout": 30,
                 "__keepalived_verdict_file": "/run/bluemind-ha/health/verdict"}
    text = Templar(loader=DataLoader(), variables=variables).template(trust_as_template(VRRP.read_text()))
    script = tmp_path / "vrrp"
    script.write_text(text.replace("/run/bluemind-ha", str(tmp_path / "run")))
    script.chmod(0o755)
    return script


def notify(script: Path, state: str):
    import subprocess

    subprocess.run([str(script), "notify", "GROUP", "BLUEMIND", state, "150"], check=True)


def test_notify_records_the_state_and_hands_it_over(tmp_path):
    script = vrrp_script(tmp_path)
    notify(script, "BACKUP")
    notify(script, "MASTER")
    assert (tmp_path / "run" / "vrrp-state").read_text().split()[0] == "MASTER"
    assert (tmp_path / "applied").read_text().split() == ["BACKUP", "MASTER"]


def test_a_notify_forked_before_the_last_applied_one_is_ignored(tmp_path):
    """keepalived forks notifies without waiting: a BACKUP forked before a MASTER
    that has already been applied must not undo it."""
    script = vrrp_script(tmp_path)
    notify(script, "MASTER")
    last = (tmp_path / "run" / "notify.last").read_text().split()
    # As if a newer notify (forked a second later) had been applied meanwhile.
    (tmp_path / "run" / "notify.last").write_text(f"{int(last[0]) + 100} 1\n")
    notify(script, "BACKUP")
    assert (tmp_path / "run" / "vrrp-state").read_text().split()[0] == "MASTER"
    assert (tmp_path / "applied").read_text().split() == ["MASTER"]


@pytest.mark.parametrize("result,active,age,verdict", [
    ("watchdog", True, 40, "0"), ("exit-code", True, 40, "0"), ("watchdog", True, 5, "1"),
    ("watchdog", False, 40, "1"), ("success", True, 40, "1"),
], ids=["active, watchdog, old", "active, crashed, old", "active, still fresh", "passive", "stopped"])
def test_a_watcher_that_ended_fails_only_an_active_nodes_old_verdict(tmp_path, result, active, age, verdict):
    import os
    import subprocess
    import time

    script = vrrp_script(tmp_path)
    health = tmp_path / "run" / "health"
    health.mkdir(parents=True)
    (health / "verdict").write_text("1\n")
    (health / "verdict.json").write_text("{}\n")
    os.utime(health / "verdict.json", (time.time() - age, time.time() - age))
    if active:
        (tmp_path / "run" / "active").write_text("{}")
    env = dict(os.environ, SERVICE_RESULT=result)
    subprocess.run([str(script), "stale"], check=True, env=env)
    assert (health / "verdict").read_text().strip() == verdict


def watcher_unit(**overrides):
    """The health watcher's unit as the role installs it, from the role's defaults."""
    tasks = yaml.safe_load((TEMPLATE.parents[1] / "tasks" / "install.yml").read_text())
    task = next(t for t in tasks if t["name"] == "Install keepalived's drop-in and the health watcher's unit")
    unit = next(f for f in task["bluemind_ha.cluster.ha_files"]["files"]
                if f["path"] == "/etc/systemd/system/bluemind-ha-health.service")
    variables = dict(ROLE_DEFAULTS, **yaml.safe_load((TEMPLATE.parents[1] / "vars" / "main.yml").read_text()))
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    for key, value in list(variables.items()):
        if isinstance(value, str) and "{{" in value and key.startswith("keepalived_"):
            variables[key] = templar.template(trust_as_template(value))
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(unit["content"]))


def test_the_watcher_writes_the_file_keepalived_tracks_within_its_bound():
    unit = watcher_unit().replace("\\\n", "")
    execstart = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert execstart.split() == ["ExecStart=/usr/local/sbin/bluemind-ha", "health", "--watch",
                                 "/run/bluemind-ha/health/verdict", "--interval", "1", "--fall", "2", "--rise", "2",
                                 "--timeout", "30"]
    assert 'file "/run/bluemind-ha/health/verdict"' in render([V4])
    for line in ("Type=notify", "User=keepalived_script", "WatchdogSec=30", "Restart=always",
                 "ExecStopPost=/etc/keepalived/bluemind-ha/vrrp stale", "Before=keepalived.service"):
        assert line in unit.splitlines(), line
    assert "WatchdogSec=12" in watcher_unit(keepalived_check_timeout=12)


@pytest.mark.parametrize("interval,fall,rise,timeout,accepted", [
    (1, 2, 2, 30, True), (5, 1, 1, 6, True), (0, 2, 2, 30, False), (1, 0, 2, 30, False), (1, 2, 0, 30, False),
    (5, 2, 2, 5, False),
])
def test_validation_bounds_the_health_watcher(interval, fall, rise, timeout, accepted):
    tasks = yaml.safe_load((TEMPLATE.parents[1] / "tasks" / "validate.yml").read_text())
    task = next(t for t in tasks if t["name"] == "Check the health watcher's interval, fall, rise and bound")
    variables = {"keepalived_check_interval": interval, "keepalived_check_fall": fall, "keepalived_check_rise": rise,
                 "keepalived_check_timeout": timeout}
    templar = Templar(loader=DataLoader(), variables=variables)
    results = [templar.template(trust_as_template("{{ " + cond + " }}")) for cond in task["ansible.builtin.assert"]["that"]]
    assert all(results) is accepted
    for name in variables:
        assert name in task["ansible.builtin.assert"]["fail_msg"]
