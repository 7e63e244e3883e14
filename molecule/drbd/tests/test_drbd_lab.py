"""The DRBD scenario's lab: each node has its backing disk, blank and of the same size."""
import pytest

import labtopo


@pytest.mark.parametrize("node", labtopo.members("bluemind_ha"))
def test_backing_disk_exists(node):
    host = labtopo.vm(node)
    disk = host.file("/dev/disk/by-id/virtio-drbd")
    assert disk.exists and disk.is_symlink
    size = int(host.check_output("blockdev --getsize64 /dev/disk/by-id/virtio-drbd"))
    assert size == 2 * 1024 ** 3


def test_backing_disks_are_distinct():
    """Each node has its own disk: a write on node1 is not visible on node2."""
    node1, node2 = (labtopo.vm(n) for n in labtopo.members("bluemind_ha"))
    marker = node1.check_output("cat /proc/sys/kernel/random/uuid")
    node1.check_output(f"printf %s {marker} | dd of=/dev/disk/by-id/virtio-drbd bs=512 seek=100 conv=fsync status=none")
    try:
        seen = node2.check_output("dd if=/dev/disk/by-id/virtio-drbd bs=512 skip=100 count=1 status=none | tr -d '\\0'")
        assert marker not in seen
    finally:
        node1.check_output("dd if=/dev/zero of=/dev/disk/by-id/virtio-drbd bs=512 seek=100 count=1 conv=fsync status=none")
