"""The booted image keeps the roles' install path offline. build.sh proves each
pre-fetched package alone in the image tree; this checks the booted guest agrees."""
from pathlib import Path

import labtopo

RECIPE = Path(__file__).resolve().parents[3] / "tests" / "lab" / "image" / "packages-prefetched.txt"
PACKAGES = [line.strip() for line in RECIPE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_prefetched_packages_install_without_download():
    host = labtopo.vm(labtopo.members("bluemind_ha")[0])
    uris = host.check_output(f"apt-get install -qq --print-uris {' '.join(PACKAGES)}")
    assert uris == "", f"these would be downloaded: {uris}"


def test_guest_never_rebuilds_its_initramfs():
    host = labtopo.vm(labtopo.members("bluemind_ha")[0])
    assert "update_initramfs=no" in host.file("/etc/initramfs-tools/update-initramfs.conf").content_string
