"""The lab image's NIC watchdog (tests/lab/image/files/usr/local/sbin/lab-nic-watchdog),
run one pass at a time against a fake sysfs tree: it resets a NIC only when that
NIC's transmit-timeout counter grows, through the virtio driver's unbind and bind,
then renames and readdresses it. On a VM, the scenarios' consoles show its resets."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "lab" / "image" / "files" / "usr" / "local" / "sbin" / "lab-nic-watchdog"


class FakeGuest:
    """A sysfs tree with NICs eth0 (virtio0) and eth1 (virtio3), stand-ins for ip(8)
    and lab-net-apply that record their calls, and the kernel log as a file."""

    def __init__(self, root: Path):
        self.root = root
        self.sys = root / "sys"
        self.calls = root / "calls"
        self.kmsg = root / "kmsg"
        driver = self.sys / "bus" / "virtio" / "drivers" / "virtio_net"
        driver.mkdir(parents=True)
        (driver / "bind").write_text("")
        (driver / "unbind").write_text("")
        for dev, vdev in (("eth0", "virtio0"), ("eth1", "virtio3")):
            self.add_nic(dev, vdev)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name in ("ip", "lab-net-apply"):
            stub = bin_dir / name
            stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.calls}"\n')
            stub.chmod(0o755)
        self.env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
                        LAB_NIC_SYSFS=str(self.sys), LAB_NIC_STATE=str(root / "state"),
                        LAB_NIC_KMSG=str(self.kmsg), LAB_NET_APPLY=str(bin_dir / "lab-net-apply"))

    def add_nic(self, dev: str, vdev: str, device: str | None = None):
        target = self.sys / "devices" / (device or vdev)
        target.mkdir(parents=True, exist_ok=True)
        net = self.sys / "class" / "net" / dev
        (net / "queues" / "tx-0").mkdir(parents=True)
        (net / "queues" / "tx-0" / "tx_timeout").write_text("0\n")
        (net / "device").symlink_to(target)
        (self.sys / "bus" / "virtio" / "devices" / vdev / "net" / dev).mkdir(parents=True)

    def time_out(self, dev: str, count: int):
        (self.sys / "class" / "net" / dev / "queues" / "tx-0" / "tx_timeout").write_text(f"{count}\n")

    def run_pass(self):
        subprocess.run(["bash", str(SCRIPT), "--once"], env=self.env, check=True, capture_output=True)

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def driver_file(self, name: str) -> str:
        return (self.sys / "bus" / "virtio" / "drivers" / "virtio_net" / name).read_text().strip()


@pytest.fixture()
def guest(tmp_path):
    return FakeGuest(tmp_path)


def test_a_growing_transmit_timeout_counter_resets_that_nic_once(guest):
    guest.time_out("eth1", 3)   # counts from before the watchdog started are no stall of its own
    guest.run_pass()
    assert guest.recorded() == [] and guest.driver_file("unbind") == ""

    guest.time_out("eth1", 4)
    guest.run_pass()
    assert guest.driver_file("unbind") == "virtio3" and guest.driver_file("bind") == "virtio3"
    assert guest.recorded() == ["lab-net-apply eth1"]
    assert "lab-nic-watchdog: reset eth1" in guest.kmsg.read_text()

    # No new timeout: nothing more happens, on either NIC.
    guest.run_pass()
    assert guest.recorded() == ["lab-net-apply eth1"]


def test_a_nic_that_comes_back_under_another_name_gets_its_name_back(guest):
    guest.run_pass()
    nets = guest.sys / "bus" / "virtio" / "devices" / "virtio3" / "net"
    (nets / "eth1").rename(nets / "eth5")
    guest.time_out("eth1", 1)
    guest.run_pass()
    assert guest.recorded() == ["ip link set eth5 name eth1", "lab-net-apply eth1"]


def test_a_nic_that_is_not_virtio_is_reported_and_left_alone(guest):
    guest.add_nic("eth2", "virtio7", device="0000:00:05.0")
    guest.run_pass()
    guest.time_out("eth2", 1)
    guest.run_pass()
    assert guest.recorded() == [] and guest.driver_file("unbind") == ""
    assert "eth2 is not a virtio NIC" in guest.kmsg.read_text()
    assert "eth2 could not be reset" in guest.kmsg.read_text()
