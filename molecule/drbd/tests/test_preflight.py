"""Preflight on the live pair: it passes on the untouched pair, and each way of
breaking the pair makes it fail with the matching problem code while changing
nothing on either node. Each case breaks the pair, runs the preflight playbook
users run, and repairs the pair whatever the outcome."""
import contextlib

import pytest

import labtopo

NODES = labtopo.members("bluemind_ha")
DISK = "/dev/disk/by-id/virtio-drbd"
SPARE = "/dev/disk/by-id/virtio-spare"
ROGUE = "192.168.60.101"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    return labtopo.write_inventory(tmp_path_factory.mktemp("preflight") / "hosts.yml")


def fingerprint(node: str) -> str:
    """What preflight must leave alone: installed packages, addresses, the DRBD
    disk's signature, and any file under /etc modified since the marker."""
    return labtopo.vm(node).check_output(
        "md5sum /var/lib/dpkg/status | cut -d' ' -f1;"
        " ip -o addr show | awk '{print $2, $3, $4}';"
        f" blkid -p -o export {DISK} || true;"
        " find /etc -newer /run/preflight-marker 2>/dev/null | sort")


def run_preflight(inventory, extra_vars=None) -> tuple[dict, list]:
    for node in NODES:
        labtopo.vm(node).check_output("touch /run/preflight-marker")
    before = {node: fingerprint(node) for node in NODES}
    report = labtopo.run_playbook("bluemind_ha.cluster.preflight", inventory, extra_vars)
    after = {node: fingerprint(node) for node in NODES}
    assert after == before, "preflight changed a node"
    assert all(report["stats"][node]["changed"] == 0 for node in NODES), report["stats"]
    problems = [p for name, host, result in labtopo.task_results(report)
                for p in result.get("problems", [])]
    return report, problems


def codes(problems: list) -> list:
    return sorted((p["code"], p["host"]) for p in problems)


def build_probe_package(node: str, version: str):
    labtopo.vm(node).check_output(
        "set -e; d=$(mktemp -d); mkdir $d/DEBIAN;"
        f" printf 'Package: hatest-probe\\nVersion: {version}\\nArchitecture: all\\nMaintainer: lab <lab@lab.test>\\n"
        "Description: test double, a package whose version differs between the nodes\\n' > $d/DEBIAN/control;"
        " dpkg-deb -b $d /tmp/hatest-probe.deb >/dev/null; dpkg -i /tmp/hatest-probe.deb >/dev/null; rm -rf $d")


@contextlib.contextmanager
def package_versions_differ():
    try:
        build_probe_package("node1", "1.0")
        build_probe_package("node2", "1.1")
        yield {"preflight_extra_packages": ["hatest-probe"]}
    finally:
        for node in NODES:
            labtopo.vm(node).run("dpkg -P hatest-probe")


@contextlib.contextmanager
def dhcp_address():
    # A lifetime is what a DHCP client gives an address; the kernel then marks it dynamic.
    node2 = labtopo.vm("node2")
    try:
        node2.check_output("ip addr change 192.168.60.12/24 dev eth1 valid_lft 600 preferred_lft 600")
        yield {}
    finally:
        node2.check_output("ip addr change 192.168.60.12/24 dev eth1 valid_lft forever preferred_lft forever")


@contextlib.contextmanager
def vip_in_use():
    # A foreign host on the public segment: a macvlan with its own MAC in a
    # network namespace of node2, invisible to node2's own report. It takes an
    # unused address that the run then names as floating IP (the pair's own
    # floating IP is held by one of the nodes once keepalived runs).
    node2 = labtopo.vm("node2")
    try:
        node2.check_output(
            "ip netns add rogue && ip link add link eth1 name rogue0 type macvlan mode bridge"
            f" && ip link set rogue0 netns rogue && ip -n rogue addr add {ROGUE}/24 dev rogue0"
            " && ip -n rogue link set rogue0 up")
        labtopo.wait_for(lambda: labtopo.vm("node1").run(f"ping -c 1 -W 1 {ROGUE}").rc == 0,
                         30, "the rogue address to answer")
        yield {"bluemind_ha_vip": f"{ROGUE}/24"}
    finally:
        node2.run("ip netns del rogue")


@contextlib.contextmanager
def filesystem_on_disk():
    # DRBD owns the real backing disk: name the spare disk as backing device,
    # with a filesystem on node1's.
    node1 = labtopo.vm("node1")
    try:
        node1.check_output(f"mkfs.ext4 -q -F -L olddata {SPARE}")
        yield {"bluemind_ha_drbd_disk": SPARE}
    finally:
        node1.check_output(f"wipefs -q -a {SPARE}")


# Each breakage with the problem it must produce. "floating IP outside the subnet"
# runs in test_keepalived, through the site playbook.
BREAKAGES = [
    (package_versions_differ, [("package_mismatch", "pair")]),
    (dhcp_address, [("dynamic_address", "node2")]),
    (filesystem_on_disk, [("disk_in_use", "node1")]),
    (vip_in_use, [("vip_in_use", "pair")]),
]


def test_fails_with_every_matching_code_at_once_and_changes_nothing(inventory):
    """All four breakages in one run (a preflight run costs about 40 s under
    emulation): preflight lists every problem, not the first one only, each with
    its own code and host, and no code comes without its breakage."""
    with contextlib.ExitStack() as stack:
        extra_vars = {}
        for breakage, expected in BREAKAGES:
            extra_vars.update(stack.enter_context(breakage()))
        report, problems = run_preflight(inventory, extra_vars)
    assert report["rc"] != 0
    assert codes(problems) == sorted(code for breakage, expected in BREAKAGES for code in expected), problems
    # The play stopped at the check: no task ran after it on any node.
    names = [name for name, host, result in labtopo.task_results(report)]
    assert names[-1].endswith("Check that the two nodes form a valid HA pair"), names


def test_passes_on_the_repaired_pair(inventory):
    """Runs after the breakages: their repairs leave nothing preflight objects to
    (the untouched pair passed it in converge's site.yml already)."""
    report, problems = run_preflight(inventory)
    assert report["rc"] == 0 and problems == [], report["stderr"]
    pair = [r["ansible_facts"]["preflight_pair"] for name, host, r in labtopo.task_results(report)
            if "preflight_pair" in r.get("ansible_facts", {})]
    assert pair and pair[0]["addresses"] == {"node1": "192.168.60.11", "node2": "192.168.60.12"}
    assert pair[0]["network"] == "192.168.60.0/24"
