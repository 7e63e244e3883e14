"""Shared checks that one scenario proves for both run in that scenario only.

The two scenarios share test_bluemind.py and test_keepalived.py. Most of their
checks exercise the storage method (a failover claims and releases it), but a
few do not: BlueMind's guard on a package upgrade, the health verdict's file,
the monitoring outputs after a failover, a crash of bm-core that hands over
like the other failing verdicts; and the power-off of the passive node proves
nothing on a SAN that the passive node's clean reboot does not (the active
node's paths and reservation do not depend on it). Run in both scenarios, they
cost the suite about three minutes of emulation. They carry the `one_scenario`
marker with the reason; the scenario whose storage method is not ONE_SCENARIO
deselects them (pytest's summary counts them as deselected, never as passed or
skipped).

The scenarios' conftest.py imports the hooks."""
from __future__ import annotations

import labtopo

# The scenario that runs them: its pair has the other one's failure domains and
# a replication link more.
ONE_SCENARIO = "drbd"
MARKER = "one_scenario"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}(reason): the check proves nothing more on the other storage method; it runs in the "
                   f"{ONE_SCENARIO} scenario only (molecule/shared/tests/scenario_scope.py)")


def split(items: list, storage: str) -> tuple[list, list]:
    """The items this scenario runs, and those it leaves to the other one."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is not None and not (marker.args or marker.kwargs.get("reason")):
            raise ValueError(f"{item.nodeid}: the {MARKER} marker needs a reason (why the other"
                             f" storage method would prove nothing more)")
        (drop if marker is not None and storage != ONE_SCENARIO else keep).append(item)
    return keep, drop


def pytest_collection_modifyitems(config, items):
    keep, drop = split(items, labtopo.inventory_vars("bluemind_ha")["bluemind_ha_storage"])
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
