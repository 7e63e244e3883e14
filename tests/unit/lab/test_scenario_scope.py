"""molecule/shared/tests/scenario_scope.py: which checks each scenario runs
(the checks themselves need the lab's VMs: `make test`)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "molecule" / "shared" / "tests"))
import scenario_scope  # noqa: E402  pylint: disable=wrong-import-position


class Mark:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class Item:
    def __init__(self, nodeid, mark=None):
        self.nodeid, self.mark = nodeid, mark

    def get_closest_marker(self, name):
        return self.mark if name == scenario_scope.MARKER else None


def items():
    return [Item("test_bluemind.py::test_failover"),
            Item("test_bluemind.py::test_upgrade", Mark("the guard is BlueMind's")),
            Item("test_keepalived.py::test_verdict", Mark(reason="keepalived reads a file"))]


def test_the_scenario_named_runs_every_check():
    keep, drop = scenario_scope.split(items(), scenario_scope.ONE_SCENARIO)
    assert [i.nodeid for i in keep] == [i.nodeid for i in items()] and drop == []


def test_the_other_scenario_leaves_the_marked_checks_in_order():
    keep, drop = scenario_scope.split(items(), "san")
    assert [i.nodeid for i in keep] == ["test_bluemind.py::test_failover"]
    assert [i.nodeid for i in drop] == ["test_bluemind.py::test_upgrade", "test_keepalived.py::test_verdict"]


@pytest.mark.parametrize("storage", ["drbd", "san"])
def test_a_marker_without_a_reason_is_refused_in_both_scenarios(storage):
    with pytest.raises(ValueError, match="test_bluemind.py::test_bare: the one_scenario marker needs a reason"):
        scenario_scope.split(items() + [Item("test_bluemind.py::test_bare", Mark())], storage)


def test_a_check_marked_for_the_other_method_runs_there_only():
    marked = [Item("test_bluemind.py::test_reboot[active]"),
              Item("test_bluemind.py::test_reboot[passive]", Mark("the SAN does not need it", storage="drbd")),
              Item("test_san.py::test_paths", Mark(reason="a SAN's paths", storage="san"))]
    keep, drop = scenario_scope.split(marked, "san")
    assert [i.nodeid for i in keep] == ["test_bluemind.py::test_reboot[active]", "test_san.py::test_paths"]
    assert [i.nodeid for i in drop] == ["test_bluemind.py::test_reboot[passive]"]
    keep, drop = scenario_scope.split(marked, "drbd")
    assert [i.nodeid for i in keep] == ["test_bluemind.py::test_reboot[active]", "test_bluemind.py::test_reboot[passive]"]
    assert [i.nodeid for i in drop] == ["test_san.py::test_paths"]


def test_a_marker_naming_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"test_bluemind.py::test_nfs: the one_scenario marker names storage='nfs'"):
        scenario_scope.split([Item("test_bluemind.py::test_nfs", Mark("why", storage="nfs"))], "drbd")
