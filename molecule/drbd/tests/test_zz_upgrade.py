"""The upgrade playbook on the drbd pair (issue 9): refused on a degraded pair
(a drained passive node) with proof that it changed nothing, then the stand-in
(tests/lab/bm_standin, a test double) from its first version to its second: both
nodes upgraded, the post-upgrade step run once, on the active node, against the
HA storage's data, BlueMind never started on the passive node. Runs last in the
scenario (file name): BlueMind stays at the second version."""
import json
import re

import pytest

import labtopo
from test_bluemind import MOUNT, NODES, RESULTS, holder, other, running_units
from test_zz_operations import flags, messages, play, result_of, settled

FIRST = labtopo.inventory_vars("bluemind_ha")["bluemind_version"]
SECOND = "5.1.101"  # the stand-in's second version (tests/lab/bm_standin/build.py)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return labtopo.write_inventory(tmp_path_factory.mktemp("upgrade") / "hosts.yml")


def test_upgrade_is_refused_on_a_degraded_pair_then_upgrades_both_nodes(inventory):
    settled()
    active = holder()
    passive = other(active)
    labtopo.vm(passive).check_output("bluemind-ha drain --reason test")
    try:
        report = play("upgrade", inventory, bluemind_version=SECOND)
        assert report["rc"] != 0 and "Upgrade refused, nothing was changed" in messages(report), messages(report)
        assert "[drained]" in messages(report)
        versions = {n: labtopo.vm(n).check_output("dpkg-query -W -f='${Version}' bm-core") for n in NODES}
        assert versions == {n: FIRST for n in NODES}, versions
        assert flags() == {active: [], passive: ["/run/bluemind-ha/drain"]}
    finally:
        labtopo.vm(passive).check_output("bluemind-ha undrain")
    settled()
    report = play("upgrade", inventory, bluemind_version=SECOND)
    assert report["rc"] == 0, messages(report)
    versions = {n: labtopo.vm(n).check_output("dpkg-query -W -f='${Version}' bm-core") for n in NODES}
    assert versions == {n: SECOND for n in NODES}, versions
    # The post-upgrade step ran once, on the active node, against the HA storage's data.
    upgrades = labtopo.vm(active).check_output(f"cat {MOUNT}/data/var/lib/postgresql/bluemind.upgrades").splitlines()
    assert [line.split()[-1] for line in upgrades] == [SECOND], upgrades
    assert labtopo.vm(passive).run("ls /var/lib/postgresql/bluemind.upgrades").rc != 0
    assert holder() == active and running_units(passive) == [] and flags() == {n: [] for n in NODES}
    said = result_of(report, "Report the upgrade")["msg"]
    measured = {"playbook_seconds": report["seconds"],
                "interrupted_at_most_seconds": float(re.search(r"at most\s+([0-9.]+) s", said).group(1))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "upgrade-drbd.json").write_text(json.dumps(measured, indent=2))
    print(f"upgrade: {measured}")
