"""The booted image keeps the roles' install path offline. build.sh makes the
pre-fetched packages the guests' only apt source (a local repository) and proves
each one installs from it in the image tree; this checks the booted guest agrees."""
from pathlib import Path

import labtopo

RECIPE = Path(__file__).resolve().parents[3] / "tests" / "lab" / "image" / "packages-prefetched.txt"
PACKAGES = [line.strip() for line in RECIPE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_prefetched_packages_install_from_the_local_repository_only():
    host = labtopo.vm(labtopo.members("bluemind_ha")[0])
    # The roles add BlueMind's repository (the lab's stand-in, served by the host at
    # 10.0.2.2); every other source is the local one.
    sources = host.check_output("grep -rhE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/ || true")
    foreign = [s for s in sources.splitlines() if "file:/var/lib/lab-apt" not in s and "//10.0.2.2:" not in s]
    assert foreign == [], f"apt sources outside the lab: {foreign}"
    assert any("file:/var/lib/lab-apt" in s for s in sources.splitlines()), sources
    simulated = host.run(f"apt-get install -s -qq {' '.join(PACKAGES)}")
    assert simulated.rc == 0, simulated.stderr


def test_guest_never_rebuilds_its_initramfs():
    host = labtopo.vm(labtopo.members("bluemind_ha")[0])
    assert "update_initramfs=no" in host.file("/etc/initramfs-tools/update-initramfs.conf").content_string
