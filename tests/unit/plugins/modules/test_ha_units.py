"""ha_units against a fake systemctl: one show for every unit, at most one call per kind
of change in a fixed order, nothing changed when a unit cannot be handled, check mode."""
import pytest
from ansible.module_utils import basic

from ansible_collections.bluemind_ha.cluster.plugins.modules import ha_units


class FakeSystemd:
    """systemctl's show, enable, disable, start, stop, restart and reload on a table of
    units: {name: [LoadState, ActiveState, UnitFileState]}."""

    def __init__(self, units, fail=None):
        self.units = {name: list(state) for name, state in units.items()}
        self.calls = []
        self.fail = fail or {}

    def run_command(self, argv, **_kwargs):
        verb, names = argv[1], argv[argv.index("--") + 1:]
        self.calls.append([verb] + names)
        if verb == "show":
            blocks = []
            for name in names:
                load, active, file_state = self.units.get(name, ["not-found", "inactive", ""])
                blocks.append(f"Id={name}\nLoadState={load}\nActiveState={active}\nUnitFileState={file_state}\n")
            return 0, "\n".join(blocks), ""
        if verb in self.fail:
            return 1, "", self.fail[verb]
        for name in names:
            state = self.units[name]
            if verb == "enable":
                state[2] = "enabled"
            elif verb == "disable":
                state[2] = "disabled"
            elif verb in ("start", "restart", "reload"):
                state[1] = "active"
            elif verb == "stop":
                state[1] = "inactive"
        return 0, "", ""


@pytest.fixture()
def systemd(run_module, monkeypatch):
    """systemd(units, asked, check=False, fail=None) -> (failed, result, fake)."""
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False: "/bin/" + name)

    def run(units, asked, check=False, fail=None):
        fake = FakeSystemd(units, fail)
        monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: fake.run_command(argv, **kw))
        failed, result, dummy = run_module(ha_units, {"units": asked, "_ansible_check_mode": check})
        return failed, result, fake
    return run


CONTROLLER = {"bluemind-ha-shutdown-begin.service": ["loaded", "inactive", "disabled"],
              "bluemind-ha-shutdown.service": ["loaded", "inactive", "disabled"],
              "bluemind-ha-retry.timer": ["loaded", "inactive", "disabled"],
              "bluemind-ha-metrics.timer": ["loaded", "active", "enabled"]}
ASKED = [{"name": "bluemind-ha-shutdown-begin.service", "enabled": True, "state": "started"},
         {"name": "bluemind-ha-shutdown.service", "enabled": True, "state": "started"},
         {"name": "bluemind-ha-retry.timer", "enabled": True, "state": "started"},
         {"name": "bluemind-ha-metrics.timer", "enabled": False, "state": "stopped"}]


def test_one_show_then_one_call_per_kind_of_change_in_order(systemd):
    failed, result, fake = systemd(CONTROLLER, ASKED)
    assert not failed and result["changed"] is True
    started = ["bluemind-ha-shutdown-begin.service", "bluemind-ha-shutdown.service", "bluemind-ha-retry.timer"]
    assert fake.calls == [["show"] + list(CONTROLLER), ["enable"] + started, ["disable", "bluemind-ha-metrics.timer"],
                          ["stop", "bluemind-ha-metrics.timer"], ["start"] + started]
    assert result["changed_units"] == list(CONTROLLER)
    assert [u["actions"] for u in result["units"]] == [["enable", "start"]] * 3 + [["disable", "stop"]]
    assert fake.units["bluemind-ha-metrics.timer"] == ["loaded", "inactive", "disabled"]


def test_a_second_run_only_reads(systemd):
    settled = {name: ["loaded", "active", "enabled"] for name in CONTROLLER}
    settled["bluemind-ha-metrics.timer"] = ["loaded", "inactive", "disabled"]
    failed, result, fake = systemd(settled, ASKED)
    assert not failed and result["changed"] is False and result["changed_units"] == []
    assert fake.calls == [["show"] + list(CONTROLLER)]


def test_check_mode_reports_the_same_changes_and_makes_none(systemd):
    failed, result, fake = systemd(CONTROLLER, ASKED, check=True)
    assert not failed and result["changed"] is True and result["changed_units"] == list(CONTROLLER)
    assert fake.calls == [["show"] + list(CONTROLLER)]
    assert fake.units == {name: list(state) for name, state in CONTROLLER.items()}


@pytest.mark.parametrize("active,state,actions", [
    ("active", "started", []), ("activating", "started", []), ("inactive", "started", ["start"]),
    ("failed", "started", ["start"]), ("active", "stopped", ["stop"]), ("failed", "stopped", []),
    ("active", "restarted", ["restart"]), ("inactive", "restarted", ["restart"]),
    ("active", "reloaded", ["reload"]), ("inactive", "reloaded", ["start"]), ("active", None, []),
])
def test_each_state_asks_for_what_systemd_needs(systemd, active, state, actions):
    asked = {"name": "a.service"} if state is None else {"name": "a.service", "state": state}
    failed, result, dummy = systemd({"a.service": ["loaded", active, "enabled"]}, [asked])
    assert not failed and result["units"][0]["actions"] == actions and result["changed"] is bool(actions)


@pytest.mark.parametrize("file_state,enabled,actions", [
    ("enabled", True, []), ("disabled", True, ["enable"]), ("enabled-runtime", True, ["enable"]),
    ("static", True, []), ("disabled", False, []), ("enabled", False, ["disable"]), ("enabled", None, []),
])
def test_enablement_follows_the_unit_file_state(systemd, file_state, enabled, actions):
    asked = {"name": "a.service"} if enabled is None else {"name": "a.service", "enabled": enabled}
    failed, result, dummy = systemd({"a.service": ["loaded", "active", file_state]}, [asked])
    assert not failed and result["units"][0]["actions"] == actions


@pytest.mark.parametrize("units,asked,problem", [
    ({}, [{"name": "frobnicate.service", "state": "started"}], "frobnicate.service: systemd does not know this unit"),
    ({"m.service": ["masked", "inactive", "masked"]}, [{"name": "m.service", "enabled": True}], "m.service: the unit is masked"),
    ({"s.service": ["loaded", "inactive", "static"]}, [{"name": "s.service", "enabled": False}], "s.service: cannot be disabled"),
    ({"b.service": ["bad-setting", "inactive", "disabled"]}, [{"name": "b.service", "state": "started"}],
     "b.service: systemd could not load the unit"),
])
def test_a_unit_that_cannot_be_handled_fails_before_any_change(systemd, units, asked, problem):
    units = dict(units, **{"ok.service": ["loaded", "inactive", "disabled"]})
    failed, result, fake = systemd(units, [{"name": "ok.service", "enabled": True, "state": "started"}] + asked)
    assert failed and result["changed"] is False
    assert len(result["problems"]) == 1 and result["problems"][0].startswith(problem), result["problems"]
    assert [call[0] for call in fake.calls] == ["show"], "nothing may change when one unit is wrong"


def test_a_masked_unit_may_stay_stopped(systemd):
    failed, result, dummy = systemd({"m.service": ["masked", "inactive", "masked"]},
                                    [{"name": "m.service", "state": "stopped"}])
    assert not failed and result["changed"] is False


@pytest.mark.parametrize("asked,problem", [
    ([{"name": "a.service"}, {"name": "a.service"}], "a.service: listed more than once"),
    ([{"name": "keepalived"}], "'keepalived': not a full unit name"),
    ([{"name": "-a.service"}], "'-a.service': not a full unit name"),
])
def test_names_are_full_and_unique(systemd, asked, problem):
    failed, result, fake = systemd({"a.service": ["loaded", "active", "enabled"]}, asked)
    assert failed and len(result["problems"]) == 1 and result["problems"][0].startswith(problem) and fake.calls == []


def test_a_failed_call_fails_the_module_naming_the_units_and_says_what_took_effect(systemd):
    failed, result, fake = systemd(CONTROLLER, ASKED, fail={"start": "Job for bluemind-ha-retry.timer failed."})
    assert failed and result["failed_action"] == "start" and result["changed"] is True
    assert "systemctl start bluemind-ha-shutdown-begin.service" in result["msg"] and "Job for" in result["msg"]
    failed, result, fake = systemd(CONTROLLER, ASKED, fail={"enable": "Failed to enable unit"})
    assert failed and result["failed_action"] == "enable" and result["changed"] is False
    assert [call[0] for call in fake.calls] == ["show", "enable"]


def test_a_unit_only_read_is_reported_whatever_its_state(systemd):
    failed, result, fake = systemd({"keepalived.service": ["loaded", "active", "enabled"]},
                                   [{"name": "keepalived.service"}, {"name": "absent.service"}])
    assert not failed and result["changed"] is False
    assert [(u["name"], u["load_state"], u["active_state"]) for u in result["units"]] == [
        ("keepalived.service", "loaded", "active"), ("absent.service", "not-found", "inactive")]
    assert [call[0] for call in fake.calls] == ["show"]


def test_check_mode_plans_a_unit_an_earlier_task_would_install(systemd):
    failed, result, fake = systemd({}, [{"name": "new.service", "enabled": True, "state": "started"}], check=True)
    assert not failed and result["changed"] is True and result["units"][0]["actions"] == ["enable", "start"]
    assert fake.calls == [["show", "new.service"]]
    failed, result, fake = systemd({}, [{"name": "new.service", "enabled": True, "state": "started"}])
    assert failed and result["problems"][0].startswith("new.service: systemd does not know this unit")
