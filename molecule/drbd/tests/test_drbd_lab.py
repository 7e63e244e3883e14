"""The DRBD scenario's lab: each node has its backing disk, of the same size. That
the two disks are distinct is shown by test_drbd (replication, resync)."""
import pytest

import labtopo


@pytest.mark.parametrize("node", labtopo.members("bluemind_ha"))
def test_backing_disk_exists(node):
    host = labtopo.vm(node)
    disk = host.file("/dev/disk/by-id/virtio-drbd")
    assert disk.exists and disk.is_symlink
    size = int(host.check_output("blockdev --getsize64 /dev/disk/by-id/virtio-drbd"))
    assert size == 2 * 1024 ** 3
