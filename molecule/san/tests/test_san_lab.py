"""The SAN scenario's lab: the array's LUN reaches each node through two paths
(one iSCSI portal per fabric) with one WWID, the same on both nodes, and both
nodes see the same blocks. This is what the san role will build on; the check
logs in by hand and logs out again, leaving the nodes as it found them."""
import concurrent.futures
import time

import pytest

import labtopo

IQN = "iqn.2026-11.test.lab:bluemind"
NODES = labtopo.members("bluemind_ha")
PORTALS = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_san_portals"]
WWID = labtopo.inventory_vars("bluemind_ha")["bluemind_ha_san_wwid"]


def iscsi_paths(host) -> dict[str, str]:
    """Device name -> WWID for every iSCSI disk of the host."""
    paths = {}
    for name in host.check_output("lsblk -dn -o NAME,TRAN | awk '$2 == \"iscsi\" {print $1}'").split():
        paths[name] = host.check_output(f"/lib/udev/scsi_id -g -u -d /dev/{name}")
    return paths


def log_in(node: str) -> dict[str, str]:
    host = labtopo.vm(node)
    host.check_output("DEBIAN_FRONTEND=noninteractive apt-get install -y -q open-iscsi >/dev/null")
    host.check_output(f"iscsiadm -m discovery -t sendtargets -p {PORTALS[0]} >/dev/null")
    for portal in PORTALS:
        host.check_output(f"iscsiadm -m node -T {IQN} -p {portal} --login >/dev/null")
    paths: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(paths) < len(PORTALS) and time.monotonic() < deadline:
        host.run("udevadm settle -t 5")
        paths = iscsi_paths(host)
    return paths


@pytest.fixture(scope="module")
def logged_in():
    with concurrent.futures.ThreadPoolExecutor(len(NODES)) as pool:
        paths = dict(zip(NODES, pool.map(log_in, NODES)))
    yield paths
    for node in NODES:
        host = labtopo.vm(node)
        host.run("iscsiadm -m node -u")
        host.run("iscsiadm -m node -o delete")


@pytest.mark.parametrize("node", NODES)
def test_lun_reaches_node_through_two_paths(logged_in, node):
    paths = logged_in[node]
    assert len(paths) == len(PORTALS) == 2, f"{node}: {paths}"
    sessions = labtopo.vm(node).check_output("iscsiadm -m session")
    for portal in PORTALS:
        assert f"{portal}:3260" in sessions, f"{node} has no session through {portal}"


@pytest.mark.parametrize("node", NODES)
def test_both_paths_carry_one_wwid(logged_in, node):
    assert set(logged_in[node].values()) == {WWID}


def test_nodes_share_the_blocks(logged_in):
    """A block written through node1's first path is read through node2's last."""
    (n1, n2) = NODES
    dev1 = sorted(logged_in[n1])[0]
    dev2 = sorted(logged_in[n2])[-1]
    marker = labtopo.vm(n1).check_output("cat /proc/sys/kernel/random/uuid")
    labtopo.vm(n1).check_output(
        f"printf %s {marker} | dd of=/dev/{dev1} bs=4096 seek=10 oflag=direct conv=sync status=none")
    seen = labtopo.vm(n2).check_output(
        f"dd if=/dev/{dev2} bs=4096 skip=10 count=1 iflag=direct status=none | tr -d '\\0'")
    assert seen == marker
