"""Shared checks that one scenario proves for both run in that scenario only.

The two scenarios share test_bluemind.py and test_keepalived.py. Most of their
checks exercise the storage method (a failover claims and releases it), but a
few do not: BlueMind's guard on a package upgrade, the health verdict's file,
the monitoring outputs after a failover, a crash of bm-core that hands over
like the other failing verdicts, keepalived stopped or its public link lost
(the hand-over is the controller's deactivation and the peer's takeover, which
the power-off and the clean reboot of the active node check on both methods);
and the loss of the passive node proves nothing on a SAN (the active node's
paths and reservation do not depend on it; its return, its key registered at
boot, is test_san's fenced node rejoining after a reboot). Run in both
scenarios, they cost the suite about eight minutes of emulation. They carry the
`one_scenario` marker with the reason (and `storage=` when the scenario is not
ONE_SCENARIO); the other scenario deselects them (pytest's summary counts them
as deselected, never as passed or skipped). A parametrized check marks the
parameters it leaves: `pytest.param("passive", marks=pytest.mark.one_scenario(...))`.

The scenarios' conftest.py imports the hooks."""
from __future__ import annotations

import labtopo

# The scenario that runs them unless the marker says otherwise: its pair has the
# other one's failure domains and a replication link more.
ONE_SCENARIO = "drbd"
STORAGES = ("drbd", "san")
MARKER = "one_scenario"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}(reason, storage='{ONE_SCENARIO}'): the check proves nothing more on the other storage"
                   f" method; it runs in that scenario only (molecule/shared/tests/scenario_scope.py)")


def runs_in(item) -> str | None:
    """The storage method whose scenario runs the item alone, or None (both)."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if not (marker.args or marker.kwargs.get("reason")):
        raise ValueError(f"{item.nodeid}: the {MARKER} marker needs a reason (why the other"
                         f" storage method would prove nothing more)")
    storage = marker.kwargs.get("storage", ONE_SCENARIO)
    if storage not in STORAGES:
        raise ValueError(f"{item.nodeid}: the {MARKER} marker names storage={storage!r}, not one of"
                         f" {', '.join(STORAGES)}")
    return storage


def split(items: list, storage: str) -> tuple[list, list]:
    """The items this scenario runs, and those it leaves to the other one."""
    keep, drop = [], []
    for item in items:
        only = runs_in(item)
        (drop if only is not None and only != storage else keep).append(item)
    return keep, drop


def pytest_collection_modifyitems(config, items):
    keep, drop = split(items, labtopo.inventory_vars("bluemind_ha")["bluemind_ha_storage"])
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
