"""The lab's fault helper does what the fault tests rely on (its power action is
checked by every power-off test: test_fencing reads the fresh boot id). Runs last
in the scenario (file name)."""
import labtopo

LAB = labtopo.lab_name()


def reaches(src: str, address: str) -> bool:
    return labtopo.vm(src).run(f"ping -c 1 -W 1 {address}").rc == 0


def test_link_cut_and_restore():
    assert reaches("node1", "192.168.60.12")
    labtopo.labctl("link", LAB, "node2", "public", "off")
    try:
        assert not reaches("node1", "192.168.60.12")
        assert "NO-CARRIER" in labtopo.vm("node2").check_output("ip -br link show eth1")
        # Only that link: the replication segment still works.
        assert reaches("node1", "10.60.0.12")
    finally:
        labtopo.labctl("link", LAB, "node2", "public", "on")
    labtopo.wait_for(lambda: reaches("node1", "192.168.60.12"), 30, "the public link to come back")


def test_disk_path_removed_and_added():
    node1 = labtopo.vm("node1")
    labtopo.labctl("disk", LAB, "node1", "spare", "del")
    labtopo.wait_for(lambda: not node1.file("/dev/disk/by-id/virtio-spare").exists, 30, "the disk to vanish")
    labtopo.labctl("disk", LAB, "node1", "spare", "add")
    labtopo.wait_for(lambda: node1.file("/dev/disk/by-id/virtio-spare").exists, 30, "the disk to return")
