#!/usr/bin/env python
"""labctl: the QEMU lab behind the molecule scenarios and ``make lab``.

Test infrastructure, not part of the collection. It builds (or reuses) a Debian 12
image, boots VMs under software emulation (TCG: /dev/kvm here does not run a stock
Debian kernel), joins them to private layer-2 segments, and injects faults through
each VM's QEMU monitor.

    labctl.py image [--prune] [--max-age-days N]      build or reuse the image
    labctl.py up --lab L --spec topology.yml [--instance-config F] [--inventory F] [--timeout S]
    labctl.py down --lab L [--lab L2 ...] | --all     power off and forget VMs
    labctl.py power L VM off|on|reset|status          pull the plug, boot, reset
    labctl.py link L VM SEGMENT off|on                cut or restore one NIC
    labctl.py disk L VM DISK del|add                  remove or re-add a disk path
    labctl.py console L VM [--tail N]                 the VM's serial console
    labctl.py ssh L VM [COMMAND...]                   a shell or a command
    labctl.py list                                    the labs, their VMs, states and PIDs
    labctl.py serve-repo --dir DIR --port PORT        serve DIR over HTTP on 127.0.0.1:PORT
    labctl.py repo --lab L --dir DIR                  build the BlueMind stand-in repository, serve it to L

Several labs share one machine (each checkout's suite, `make lab`): `down --lab`
touches only the named labs, `down --all` every lab of the machine. Finding a lab's
QEMU processes: each is renamed lab-<lab>-<vm> (QEMU -name ...,process=), so
`pgrep -a qemu-system` finds none; `labctl.py list` prints every VM's PID, or use
`pgrep -af process=lab-` (`pgrep -a lab-` matches the name, cut at 15 characters).

Images: one per recipe hash under LAB_CACHE_DIR/images. Building one never deletes
an image a lab uses; it removes the other images unused for more than
LAB_IMAGE_MAX_AGE_DAYS days (default 14); `image --prune` removes every image but
the current recipe's that no lab uses.

Boot: `up` (and `power ... on --wait`) waits LAB_BOOT_TIMEOUT seconds (default
900) for each VM's SSH.

Power semantics (shared with the Redfish test double): "off" ends the QEMU process
at once, like pulling the plug (no CPU, disk or network activity after it); "on"
starts a new QEMU process with the same disks, so the guest boots from scratch.

Topology file: a molecule.yml, or any mapping with ``platforms``, a list of VMs:
    - name: node1
      image: node             # node (default) or san (LIO target installed)
      memory: 2048            # MiB
      cpus: 2
      domain: lab.test        # FQDN = name.domain, written to /etc/hosts
      nics:                   # eth1, eth2, ... in this order; eth0 is management
        - segment: public
          address: 192.168.60.11/24
          address6: fd00:60::11/64
      disks:                  # /dev/vdb, /dev/vdc, ...; /dev/disk/by-id/virtio-NAME
        - name: drbd
          size: 2G
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE_RECIPE = HERE / "image"
CACHE = Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "bluemind-ha-lab"))
RUN = Path(os.environ.get("LAB_RUN_DIR", CACHE / "run"))
IMAGES = CACHE / "images"
SSH_KEY = CACHE / "ssh" / "id_ed25519"
# Serial consoles of labs taken down, kept for the post-mortem of a failed run.
LOGS = CACHE / "logs"
# Read through a variable so that the unit tests can stand a fake process table in.
PROC = Path("/proc")
# A cached image unused for longer than this is removed when another is built: a
# recipe change builds a new image (about 50 s, 1-2 GB), and a checkout of an older
# commit, or a suite still running on one, may need the old one again soon. Two
# weeks covers a branch left aside for a while without letting the cache grow
# without end. LAB_IMAGE_MAX_AGE_DAYS or `image --max-age-days` change it.
IMAGE_MAX_AGE_DAYS = 14.0
# Touched whenever a lab takes an image or lets it go: an image's last use.
IMAGE_STAMP = ".last-used"
# Each VM must answer SSH within this many seconds of its start. Alone under software
# emulation a guest answers within 50 s (docs/lab.md: 29 to 48 s measured), but on a
# loaded host far later: 586 s with the 2-core host running four times as many
# vCPUs as it has cores (issue 27). 900 s covers that with a margin, and a VM that
# truly hangs still fails within 15 minutes rather than holding a suite for an hour.
BOOT_TIMEOUT = 900.0
# How often the lab's power service looks for a VM whose guest rebooted (serve-power).
POWER_POLL = 0.5
# Segment order fixes the multicast port offset of each segment within a lab.
SEGMENTS = ("public", "replication", "fabric_a", "fabric_b", "spare")
PORT_STRIDE = 100           # ports reserved per lab: segments, SSH, controllers
PORT_FIRST = 20000
PORT_SLOTS = 300
SSH_OFFSET = 10
BMC_OFFSET = 50             # Redfish test doubles, one per VM
SERVICE_OFFSET = 90         # host-side services of a lab (repositories, receivers)
TIME_OFFSET = 91            # the lab's NTP server (UDP), reached by guests at 10.0.2.2
REPO_OFFSET = 92            # a package repository (HTTP), e.g. the BlueMind stand-in (tests/lab/bm_standin)
# Every VM reaches the management controller (Redfish test double) of the lab's
# VM number i at BMC_GUEST_NET.(BMC_GUEST_FIRST + i):443, whatever the lab's ports.
BMC_GUEST_NET = "10.0.2"
BMC_GUEST_FIRST = 100
DEFAULT_BMC = {"username": "admin", "password": "lab-bmc-password"}
# QEMU's user network maps this guest-side address to the host's loopback.
HOST_FROM_GUEST = "10.0.2.2"
MCAST_GROUP = "230.0.0.1"
DEFAULT_DOMAIN = "lab.test"
# node: Debian 12 with the roles' packages pre-fetched; san: the same with the LIO
# target tools installed (the storage array of the san scenario).
IMAGE_FLAVOURS = {"node": "rootfs.img", "san": "rootfs-san.img"}


class LabError(Exception):
    """A failure worth one clear line to the operator."""


class BootTimeout(LabError):
    """A VM that did not answer SSH within the bound."""


def qemu_cpu() -> str:
    """The guests' CPU model under TCG (LAB_QEMU_CPU, else max)."""
    return os.environ.get("LAB_QEMU_CPU") or "max"


def boot_timeout() -> float:
    text = os.environ.get("LAB_BOOT_TIMEOUT", "")
    try:
        return float(text) if text.strip() else BOOT_TIMEOUT
    except ValueError:
        raise LabError(f"LAB_BOOT_TIMEOUT={text!r} is not a number of seconds") from None


def boot_timeout_advice(waited: float) -> str:
    return (f"waited {waited:.0f} s; the host may be oversubscribed ({host_load()}; "
            f"`labctl.py list` shows them); raise the bound with LAB_BOOT_TIMEOUT=SECONDS "
            f"(or --timeout; default {BOOT_TIMEOUT:.0f} s)")


def log(msg: str) -> None:
    print(f"[labctl {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- image


def ensure_ssh_key() -> Path:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bluemind-ha-lab",
                        "-f", str(SSH_KEY)], check=True)
    return SSH_KEY


def image_key() -> str:
    """Hash of everything the image is made from: recipe files and the SSH key."""
    digest = hashlib.sha256()
    for path in sorted(IMAGE_RECIPE.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(IMAGE_RECIPE)).encode() + b"\0")
            digest.update(oct(path.stat().st_mode & 0o111).encode())
            digest.update(path.read_bytes() + b"\0")
    digest.update(Path(str(ensure_ssh_key()) + ".pub").read_bytes())
    digest.update(os.environ.get("LAB_DEBIAN_MIRROR", "").encode())
    return digest.hexdigest()[:16]


def image_max_age_days() -> float:
    text = os.environ.get("LAB_IMAGE_MAX_AGE_DAYS", "")
    try:
        return float(text) if text.strip() else IMAGE_MAX_AGE_DAYS
    except ValueError:
        raise LabError(f"LAB_IMAGE_MAX_AGE_DAYS={text!r} is not a number of days") from None


@contextlib.contextmanager
def image_lock():
    """The image cache's lock: one build or prune at a time, on the whole machine."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    with open(IMAGES / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def touch_image(path: Path) -> None:
    with contextlib.suppress(OSError):
        (path / IMAGE_STAMP).touch()


def image_last_used(path: Path) -> float:
    """When a lab last took or let go of the image (its stamp); an image made before
    the stamp existed counts from its directory's last change."""
    times = []
    for candidate in (path / IMAGE_STAMP, path):
        with contextlib.suppress(OSError):
            times.append(candidate.stat().st_mtime)
    return max(times, default=0.0)


def ensure_image(max_age_days: float | None = None) -> Path:
    """The current recipe's image, built if missing. A build then removes the other
    images unused for more than MAX_AGE_DAYS (default LAB_IMAGE_MAX_AGE_DAYS):
    never one a lab uses (prune_images)."""
    with image_lock():
        return ensure_image_locked(max_age_days)


def ensure_image_locked(max_age_days: float | None = None) -> Path:
    """ensure_image, for a caller that holds image_lock."""
    key = image_key()
    path = IMAGES / key
    if all((path / f).exists() for f in IMAGE_FLAVOURS.values()):
        log(f"image {key} cached at {path}")
        touch_image(path)
        return path
    log(f"building image {key} (recipe changed or no cache)")
    start = time.monotonic()
    subprocess.run([str(IMAGE_RECIPE / "build.sh"), str(path), str(SSH_KEY) + ".pub"], check=True)
    log(f"image {key} built in {time.monotonic() - start:.0f} s")
    touch_image(path)
    days = image_max_age_days() if max_age_days is None else max_age_days
    prune_images(keep=key, unused_for=days * 86400)
    return path


def images_in_use() -> dict[str, list[str]]:
    """Image name -> the labs (or QEMU processes) that boot from it. A lab records
    its image in lab.json and each VM's QEMU command line (kernel, initrd); the
    running QEMU processes are read too, which covers labs of another LAB_RUN_DIR
    and VMs whose lab directory is gone. Raises LabError when a lab's record cannot
    be read: nothing may be pruned then."""
    used: dict[str, list[str]] = {}

    def note(value, user: str) -> None:
        path = Path(str(value))
        if path.parent.parent == IMAGES and path.parent.name:
            path = path.parent
        if path.parent == IMAGES and path.name:
            used.setdefault(path.name, [])
            if user not in used[path.name]:
                used[path.name].append(user)

    if RUN.exists():
        for lab_dir in sorted(RUN.iterdir()):
            if not lab_dir.is_dir():
                continue
            try:
                records = [json.loads(f.read_text()) for f in [lab_dir / "lab.json", *lab_dir.glob("*/vm.json")]
                           if f.exists()]
            except (OSError, ValueError) as exc:
                raise LabError(f"cannot tell which image lab {lab_dir.name} uses ({exc})") from None
            for record in records:
                for value in [record.get("image", ""), *record.get("argv", [])]:
                    note(value, f"lab {lab_dir.name}")
    for proc in lab_processes():
        for value in proc["argv"]:
            note(value, f"QEMU {proc['pid']} ({proc['name']})")
    return used


def prune_images(keep: str, unused_for: float | None = None) -> list[str]:
    """Remove the cached images other than KEEP that no lab uses; with UNUSED_FOR,
    only those whose last use is older than that many seconds. The caller holds
    image_lock (so no build is under way). The names removed."""
    try:
        used = images_in_use()
    except LabError as exc:
        log(f"images: none removed: {exc}")
        return []
    removed = []
    now = time.time()
    for path in sorted(IMAGES.iterdir()) if IMAGES.exists() else []:
        if not path.is_dir() or path.name == keep or path.name.startswith("."):
            continue
        if path.name in used:
            log(f"image {path.name} kept: in use by {', '.join(used[path.name])}")
            continue
        idle = now - image_last_used(path)
        if unused_for is not None and idle <= unused_for:
            continue
        log(f"image {path.name} removed (unused for {idle / 86400:.1f} days)")
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


# ------------------------------------------------------------------ topology


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = str(text).strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def load_spec(path: Path) -> dict:
    import yaml  # PyYAML comes with ansible-core in the project venv

    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {"platforms": data}


def load_topology(path: Path) -> list[dict]:
    data = load_spec(path)
    platforms = data.get("platforms") if isinstance(data, dict) else data
    if not isinstance(platforms, list) or not platforms:
        raise LabError(f"{path}: expected a non-empty list of platforms")
    names = set()
    for vm in platforms:
        if "name" not in vm:
            raise LabError(f"{path}: a platform has no name")
        if vm["name"] in names:
            raise LabError(f"{path}: platform {vm['name']} appears twice")
        names.add(vm["name"])
        for net in vm.get("nics", []):
            if net.get("segment") not in SEGMENTS:
                raise LabError(f"{path}: {vm['name']}: segment {net.get('segment')!r} "
                               f"is not one of {', '.join(SEGMENTS)}")
    return platforms


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_port_base(lab: str) -> int:
    """A port block no other lab of this machine uses, stable for a given name."""
    used = set()
    if RUN.exists():
        for other in RUN.iterdir():
            meta = other / "lab.json"
            if other.name != lab and meta.exists():
                used.add(json.loads(meta.read_text())["port_base"])
    start = int(hashlib.sha256(lab.encode()).hexdigest(), 16) % PORT_SLOTS
    for i in range(PORT_SLOTS):
        base = PORT_FIRST + ((start + i) % PORT_SLOTS) * PORT_STRIDE
        if base in used:
            continue
        if all(port_free(base + off) for off in range(SSH_OFFSET, PORT_STRIDE)):
            return base
    raise LabError("no free port block for a new lab")


# ------------------------------------------------------------------- monitor


def hmp(sock_path: Path, command: str, timeout: float = 10.0) -> str:
    """Send one human-monitor command and return its output."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        buf = b""
        while not buf.endswith(b"(qemu) "):
            chunk = sock.recv(4096)
            if not chunk:
                raise LabError(f"monitor {sock_path} closed")
            buf += chunk
        sock.sendall(command.encode() + b"\n")
        buf = b""
        with contextlib.suppress(OSError):
            while not buf.endswith(b"(qemu) "):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
    text = buf.decode(errors="replace").replace("\r", "")
    lines = [line for line in text.split("\n") if not line.startswith("(qemu)")]
    return "\n".join(line for line in lines if line.strip() and command not in line).strip()


def nic_resets(console: str) -> list[str]:
    """The NICs the image's lab-nic-watchdog reset, one entry per reset, from a
    serial console: a virtio NIC the emulator stopped serving (tests/lab/image)."""
    found = []
    for line in console.splitlines():
        marker = line.find("lab-nic-watchdog: reset ")
        words = line[marker:].split()[2:] if marker >= 0 else []
        if words:
            found.append(words[0].rstrip(":"))
    return found


def guest_powered_down(console_tail: str) -> bool:
    """Whether the guest's kernel ended its last run with a power-off (its
    "reboot: Power down" line, printed whatever the console level), not a reboot
    ("reboot: Restarting system"), a panic's reboot or a reset from the host."""
    lines = [line for line in console_tail.splitlines() if "reboot: " in line or "===== labctl:" in line]
    return bool(lines) and "reboot: Power down" in lines[-1]


def lockup_reboots(console: str) -> int:
    """How many times the guest panicked on a soft lockup (and so rebooted), from
    its serial console: a VM the emulator stopped scheduling (softlockup_panic)."""
    return sum("not syncing: softlockup" in line for line in console.splitlines())


# ------------------------------------------------------------------------ VM


class VM:
    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.dir = lab.dir / name

    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "vm.json").read_text())

    @property
    def monitor(self) -> Path:
        return self.dir / "monitor.sock"

    def pid(self) -> int | None:
        try:
            pid = int((self.dir / "qemu.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        return pid if f"lab-{self.lab.name}-{self.name}".encode() in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    @contextlib.contextmanager
    def power_lock(self):
        """One power change of this VM at a time: labctl's commands and the lab's
        power service (serve-power) both start VMs."""
        with open(self.dir / "power.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def wanted_on(self) -> bool:
        """The VM's power as last asked (power on/off, up): on until asked off."""
        try:
            return (self.dir / "power").read_text().strip() != "off"
        except OSError:
            return False

    def want(self, state: str) -> None:
        (self.dir / "power").write_text(state + "\n")

    def start(self) -> None:
        with self.power_lock():
            self.want("on")
            self._start_locked()

    def _start_locked(self, why: str = "power on") -> None:
        if self.running():
            return
        argv = self.meta["argv"]
        (self.dir / "qemu.pid").unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)
        with open(self.dir / "console.log", "a") as console:
            console.write(f"\n===== labctl: {why} {time.strftime('%Y-%m-%dT%H:%M:%S')} =====\n")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LabError(f"{self.name}: QEMU did not start: {proc.stderr.strip()}")

    def power_off(self, timeout: float = 15.0) -> None:
        """Pull the plug: the QEMU process ends now, the guest gets no warning."""
        with self.power_lock():
            self.want("off")
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, LabError):
            hmp(self.monitor, "quit", timeout=3)
        deadline = time.monotonic() + timeout
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)

    def power_on(self) -> None:
        self.start()

    def restart_after_exit(self) -> str:
        """What the lab's power service does about a VM whose QEMU process is
        gone: boot it in a new process ("restarted": a guest reboot, a reset, a
        panic's reboot), or nothing ("" while it runs or was asked off;
        "powered down" when the guest powered itself off, now recorded as off)."""
        with self.power_lock():
            if not self.wanted_on() or self.running():
                return ""
            if guest_powered_down(self.console_tail(5)):
                self.want("off")
                return "powered down"
            self._start_locked("the guest rebooted: power on in a new QEMU process")
            return "restarted"

    def reimage(self) -> None:
        """A node reinstalled from scratch, with its old name and addresses: the
        plug is pulled, the root disk is a new overlay on the base image (the
        first boot's lab-init writes the same hostname and addresses from the
        kernel command line), every data disk is blank again. It stays off."""
        self.power_off()
        root = self.dir / "root.qcow2"
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(root)],
                                         capture_output=True, text=True, check=True).stdout)
        backing = info["backing-filename"]
        root.unlink()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, str(root)], check=True)
        for disk in self.meta["disks"].values():
            path = Path(disk["file"])
            path.unlink()
            with open(path, "wb") as handle:
                handle.truncate(disk["size"])

    def reset(self) -> None:
        if not self.running():
            raise LabError(f"{self.name} is off; use 'power on'")
        hmp(self.monitor, "system_reset")

    def power_state(self) -> str:
        # A guest rebooting between two QEMU processes is on, as a rebooting
        # server's management controller says.
        return "On" if self.running() or self.wanted_on() else "Off"

    def set_link(self, segment: str, up: bool) -> None:
        if segment not in self.meta["segments"] and segment != "mgmt":
            raise LabError(f"{self.name} has no NIC on segment {segment}")
        out = hmp(self.monitor, f"set_link nic-{segment} {'on' if up else 'off'}")
        if out:
            raise LabError(f"{self.name}: set_link: {out}")

    def disk(self, disk: str, present: bool) -> None:
        disks = self.meta["disks"]
        if disk not in disks:
            raise LabError(f"{self.name} has no disk {disk}")
        if not present:
            out = hmp(self.monitor, f"device_del disk-{disk}")
            # Unplug completes when the guest acknowledges it; wait (bounded) so a
            # following "add" does not meet the old device.
            deadline = time.monotonic() + 60
            while f"/disk-{disk}/" in hmp(self.monitor, "info block"):
                if time.monotonic() > deadline:
                    raise LabError(f"{self.name}: the guest did not release disk {disk} in 60 s")
                time.sleep(0.2)
        else:
            gen = int(time.time() * 1000) % 1000000
            info = disks[disk]
            out = hmp(self.monitor, f"drive_add 0 if=none,id=drv-{disk}-{gen},file={info['file']},"
                                    f"format=raw,cache=writeback")
            if "OK" not in out:
                raise LabError(f"{self.name}: drive_add: {out}")
            out = hmp(self.monitor, f"device_add virtio-blk-pci,drive=drv-{disk}-{gen},"
                                    f"id=disk-{disk},serial={disk}")
        if out and "OK" not in out:
            raise LabError(f"{self.name}: {out}")

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = (self.dir / "console.log").read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])

    def ssh_argv(self, *command: str) -> list[str]:
        return ["ssh", "-q", "-i", str(SSH_KEY), "-p", str(self.meta["ssh_port"]),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "root@127.0.0.1", *command]

    def wait_ssh(self, timeout: float) -> float:
        """Wait until sshd answers with its banner and a login works; seconds taken."""
        start = time.monotonic()
        port = self.meta["ssh_port"]
        while True:
            if not self.running():
                raise LabError(f"{self.name}: QEMU exited during boot")
            waited = time.monotonic() - start
            if waited > timeout:
                raise BootTimeout(f"{self.name}: no SSH within the bound of {timeout:.0f} s: "
                                  + boot_timeout_advice(waited))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.settimeout(3)
                    if sock.recv(64).startswith(b"SSH-2.0-OpenSSH"):
                        proc = subprocess.run(self.ssh_argv("true"), capture_output=True, timeout=20, check=False)
                        if proc.returncode == 0:
                            return time.monotonic() - start
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.5)


# ----------------------------------------------------------------------- lab


class Lab:
    def __init__(self, name: str):
        self.name = name
        self.dir = RUN / name

    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "lab.json").read_text())

    def exists(self) -> bool:
        return (self.dir / "lab.json").exists()

    def vm(self, name: str) -> VM:
        if not (self.dir / name / "vm.json").exists():
            raise LabError(f"lab {self.name} has no VM {name}")
        return VM(self, name)

    def vms(self) -> list[VM]:
        if not self.exists():
            return []
        return [VM(self, name) for name in self.meta["vms"]]

    def port(self, offset: int) -> int:
        return self.meta["port_base"] + offset

    # -- creation

    def define(self, platforms: list[dict], image: Path) -> None:
        base = allocate_port_base(self.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        mac_prefix = "52:54:00:%02x" % (int(hashlib.sha256(self.name.encode()).hexdigest(), 16) % 256)
        for index, spec in enumerate(platforms):
            self._define_vm(index, spec, image, base, mac_prefix, platforms)
        (self.dir / "lab.json").write_text(json.dumps({
            "port_base": base, "image": str(image),
            "vms": [p["name"] for p in platforms],
            "bmc_ports": {p["name"]: base + BMC_OFFSET + i for i, p in enumerate(platforms)},
            "service_port": base + SERVICE_OFFSET,
            "time_server": f"{HOST_FROM_GUEST}:{base + TIME_OFFSET}",
        }, indent=2))

    def _define_vm(self, index: int, spec: dict, image: Path, base: int, mac_prefix: str,
                   platforms: list[dict]) -> None:
        name = spec["name"]
        vdir = self.dir / name
        vdir.mkdir(parents=True, exist_ok=True)
        root = vdir / "root.qcow2"
        if not root.exists():
            flavour = spec.get("image", "node")
            if flavour not in IMAGE_FLAVOURS:
                raise LabError(f"{name}: image {flavour!r} is not one of {', '.join(IMAGE_FLAVOURS)}")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                            "-b", str(image / IMAGE_FLAVOURS[flavour]), str(root)], check=True)
        ssh_port = base + SSH_OFFSET + index
        cpus = int(spec.get("cpus", 2))
        nets, segments = [], []
        argv = [
            "qemu-system-x86_64", "-name", f"lab-{self.name}-{name},process=lab-{self.name}-{name}",
            # The server's identity, as a real one has in its firmware: the guest
            # reads it as its DMI product UUID, the Redfish double reports it.
            "-uuid", vm_uuid(self.name, name),
            "-machine", "pc", "-accel", "tcg,thread=multi", "-cpu", qemu_cpu(),
            "-smp", str(cpus), "-m", str(int(spec.get("memory", 1024))),
            "-nodefaults", "-display", "none", "-rtc", "base=utc",
            # One console file for every QEMU process of the VM (append=on): a
            # guest reboot starts a new process (below), and the lockup and NIC
            # watchdog counts read the whole history.
            "-chardev", f"file,id=console,path={vdir / 'console.log'},append=on", "-serial", "chardev:console",
            # A guest reboot ends the QEMU process and the lab's power service
            # (serve-power) boots the VM in a new one: an in-process reset under
            # TCG made the next boot's kernel phase take 10 to 47 s instead of
            # about 6 s for a fresh process (san lab, 2026-12-07), with the rest
            # of the boot slower too (docs/lab.md, "Reboots").
            "-no-reboot",
            "-monitor", f"unix:{vdir / 'monitor.sock'},server,nowait",
            "-pidfile", str(vdir / "qemu.pid"), "-daemonize",
            "-device", "virtio-rng-pci",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-drive", f"file={root},if=none,id=drv-root,format=qcow2,cache=unsafe,discard=unmap",
            "-device", "virtio-blk-pci,drive=drv-root,id=disk-root,serial=root",
            "-netdev", f"user,id=mgmt,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"
                       + "".join(f",guestfwd=tcp:{BMC_GUEST_NET}.{BMC_GUEST_FIRST + j}:443-cmd:"
                                 f"{sys.executable} {Path(__file__).resolve()} bmc-relay --port {base + BMC_OFFSET + j}"
                                 for j in range(len(platforms))),
            "-device", f"virtio-net-pci,netdev=mgmt,id=nic-mgmt,mac={mac_prefix}:{index:02x}:00",
        ]
        for nic, net in enumerate(spec.get("nics", []), start=1):
            seg = net["segment"]
            port = base + SEGMENTS.index(seg)
            segments.append(seg)
            argv += ["-netdev", f"socket,id=net-{seg},mcast={MCAST_GROUP}:{port},localaddr=127.0.0.1",
                     "-device", f"virtio-net-pci,netdev=net-{seg},id=nic-{seg},"
                                f"mac={mac_prefix}:{index:02x}:{nic:02x}"]
            addrs = [a for a in (net.get("address"), net.get("address6")) if a]
            if addrs:
                nets.append(f"eth{nic}=" + "+".join(addrs))
        disks = {}
        for disk in spec.get("disks", []):
            path = vdir / f"disk-{disk['name']}.img"
            if not path.exists():
                with open(path, "wb") as fh:
                    fh.truncate(parse_size(disk.get("size", "1G")))
            disks[disk["name"]] = {"file": str(path), "size": path.stat().st_size}
            argv += ["-drive", f"file={path},if=none,id=drv-{disk['name']},format=raw,cache=writeback",
                     "-device", f"virtio-blk-pci,drive=drv-{disk['name']},id=disk-{disk['name']},"
                                f"serial={disk['name']}"]
        # softlockup_panic=1 with panic=5: a guest whose CPUs stop being scheduled
        # (seen once under TCG, 2026-11-29: both vCPUs stuck in the idle task with
        # "rcu_preempt kthread timer wakeup didn't happen" 39 s after a power-on,
        # for good) panics at the kernel's first soft-lockup report and reboots
        # 5 s later, like a crashed node, instead of staying a dead VM that every
        # later check finds unreachable. The console keeps the panic (lockup_reboots).
        cmdline = ["root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0", "biosdevname=0",
                   "panic=5", "softlockup_panic=1", "quiet", "systemd.show_status=false", "mitigations=off",
                   f"lab.hostname={spec.get('hostname', name)}",
                   f"lab.domain={spec.get('domain', DEFAULT_DOMAIN)}"]
        if nets:
            cmdline.append("lab.net=" + ",".join(nets))
        argv += ["-append", " ".join(cmdline)]
        (vdir / "vm.json").write_text(json.dumps({
            "argv": argv, "ssh_port": ssh_port, "segments": segments, "disks": disks,
            "spec": spec,
        }, indent=2))

    def up(self, platforms: list[dict], timeout: float) -> dict[str, float]:
        # Held until lab.json names the image: a prune in between would not see
        # that this lab is about to boot from it.
        with image_lock():
            image = ensure_image_locked()
            if not self.exists():
                self.define(platforms, image)
        vms = self.vms()
        start = time.monotonic()
        self.start_time_server()
        self.start_bmc_doubles()
        self.start_service("power", "serve-power", "--lab", self.name)
        for vm in vms:
            vm.start()
        log(f"lab {self.name}: {len(vms)} VM(s) started, waiting for SSH")
        times: dict[str, float] = {}
        errors = []
        timeouts = []
        with concurrent.futures.ThreadPoolExecutor(len(vms)) as pool:
            futures = {pool.submit(vm.wait_ssh, timeout): vm for vm in vms}
            for fut in concurrent.futures.as_completed(futures):
                vm = futures[fut]
                try:
                    times[vm.name] = fut.result()
                    log(f"{vm.name}: SSH up after {times[vm.name]:.1f} s")
                except LabError as exc:
                    errors.append(vm)
                    if isinstance(exc, BootTimeout):
                        timeouts.append(exc)
                    log(f"{exc}\n----- {vm.name} console (last lines) -----\n{vm.console_tail()}")
        if errors:
            self.down()
            raise LabError(f"lab {self.name}: {', '.join(v.name for v in errors)} did not boot; lab destroyed"
                           + (f"; {timeouts[0]}" if timeouts else ""))
        log(f"lab {self.name}: all VMs reachable in {time.monotonic() - start:.1f} s")
        return times

    def start_service(self, name: str, *args: str) -> bool:
        """Start `labctl.py ARGS` detached as the lab's host-side service NAME,
        unless it already runs; stop_services stops it with the lab. True
        when it was started now."""
        services = self.dir / "services"
        services.mkdir(exist_ok=True)
        pidfile = services / f"{name}.pid"
        if pidfile.exists():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), 0)
                return False
        with open(services / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        pidfile.write_text(str(proc.pid))
        return True

    def start_time_server(self) -> None:
        """Serve the host's clock over NTP: the lab's stand-in for a site's NTP
        servers, so that chrony on the guests reports a synchronised clock."""
        self.start_service("time", "serve-time", "--port", str(self.port(TIME_OFFSET)))

    def start_repo(self, directory: Path) -> str:
        """Serve DIRECTORY (a package repository, such as the BlueMind stand-in
        built by tests/lab/bm_standin/build.py) over HTTP to the lab's guests; the
        URL they reach it at. Not started by up: the scenarios that need it do."""
        port = self.port(REPO_OFFSET)
        if self.start_service("repo", "serve-repo", "--dir", str(Path(directory).resolve()), "--port", str(port)):
            deadline = time.monotonic() + 10
            while port_free(port) and time.monotonic() < deadline:
                time.sleep(0.05)
        return f"http://{HOST_FROM_GUEST}:{port}"

    def start_bmc_doubles(self) -> None:
        """The management controllers of the VMs (test doubles of a BMC's Redfish
        service): one HTTPS port per VM on the host, relayed into every guest."""
        services = self.dir / "services"
        services.mkdir(exist_ok=True)
        cert, key = services / "bmc-cert.pem", services / "bmc-key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
                            "-subj", "/CN=lab-bmc", "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True)
        if not self.start_service("bmc", "serve-bmc", "--lab", self.name):
            return
        # Ready when every port accepts connections.
        deadline = time.monotonic() + 10
        ports = [self.port(BMC_OFFSET + i) for i in range(len(self.meta["vms"]))]
        while any(port_free(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.05)

    def down(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            # Its last use: the age-based pruning counts from here.
            touch_image(Path(self.meta["image"]))
        for vm in self.vms():
            vm.power_off()
            console = vm.dir / "console.log"
            if console.exists():
                (LOGS / self.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(console, LOGS / self.name / f"{vm.name}-console.log")
                text = console.read_text(errors="replace")
                resets = nic_resets(text)
                if resets:
                    log(f"{vm.name}: lab-nic-watchdog reset {len(resets)} NIC(s): {', '.join(resets)} "
                        f"(a stalled emulated NIC, or `--reset` by hand: see {vm.name}-console.log)")
                lockups = lockup_reboots(text)
                if lockups:
                    log(f"{vm.name}: rebooted {lockups} time(s) after a soft lockup (vCPUs no longer "
                        f"scheduled by the emulator: see {vm.name}-console.log)")
        stop_services(self)
        # Each reboot the power service handled (or could not), kept with the consoles.
        power_log = self.dir / "services" / "power.log"
        if power_log.exists():
            (LOGS / self.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(power_log, LOGS / self.name / "power.log")
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- outputs

    def instance_config(self) -> list[dict]:
        return [{"instance": vm.name, "address": "127.0.0.1", "user": "root",
                 "port": str(vm.meta["ssh_port"]), "identity_file": str(SSH_KEY)}
                for vm in self.vms()]

    def inventory(self, spec: dict | None = None) -> dict:
        """An Ansible inventory of the lab; with a molecule.yml as spec, its
        provisioner inventory variables come along (one source for both)."""
        hosts = {}
        for vm in self.vms():
            hosts[vm.name] = {"ansible_host": "127.0.0.1", "ansible_port": vm.meta["ssh_port"],
                              "ansible_user": "root",
                              "ansible_ssh_private_key_file": str(SSH_KEY)}
        groups: dict[str, dict] = {}
        for vm in self.vms():
            for group in vm.meta["spec"].get("groups", []):
                groups.setdefault(group, {"hosts": {}})["hosts"][vm.name] = {}
        provisioned = ((spec or {}).get("provisioner") or {}).get("inventory") or {}
        for group, group_vars in (provisioned.get("group_vars") or {}).items():
            if group == "all":
                continue
            groups.setdefault(group, {"hosts": {}})["vars"] = group_vars
        for host, host_vars in (provisioned.get("host_vars") or {}).items():
            if host in hosts:
                hosts[host].update(host_vars)
        return {"all": {"hosts": hosts, "children": groups}}


def stop_services(lab: Lab) -> None:
    """Stop the lab's host-side services (test doubles) recorded in services/*.pid."""
    for pidfile in (lab.dir / "services").glob("*.pid") if (lab.dir / "services").exists() else []:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)


def lab_processes() -> list[dict]:
    """The QEMU processes started by any lab of this machine, orphaned ones and
    those of another LAB_RUN_DIR included, found by the process name labctl gives
    them (-name lab-L-VM,process=lab-L-VM): pid, name (lab-L-VM), lab directory
    (from the pidfile's path, None if absent) and argv."""
    found = []
    for proc in PROC.iterdir() if PROC.exists() else []:
        if not proc.name.isdigit():
            continue
        try:
            argv = [arg.decode(errors="replace") for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        names = [arg.split(",")[0] for arg in argv if arg.startswith("lab-") and ",process=lab-" in arg]
        if not (argv and argv[0].endswith("qemu-system-x86_64") and names):
            continue
        pidfile = argv[argv.index("-pidfile") + 1] if "-pidfile" in argv[:-1] else None
        found.append({"pid": int(proc.name), "name": names[0], "argv": argv,
                      "lab_dir": str(Path(pidfile).parent.parent) if pidfile else None})
    return sorted(found, key=lambda p: p["pid"])


def stray_qemu_pids() -> list[int]:
    """QEMU processes started by any lab (by their process name), even orphaned ones."""
    return [proc["pid"] for proc in lab_processes()]


def host_load() -> str:
    """The host's load and the labs sharing it, for an operator wondering why a
    boot was slow."""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    procs = lab_processes()
    labs = {p["lab_dir"] or p["name"] for p in procs}
    return (f"load average {load} on {os.cpu_count()} CPU(s), {len(labs)} lab(s) with "
            f"{len(procs)} VM(s) running on this host")


# ----------------------------------------------------------------------- CLI


def write_yaml(path: Path, data) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by tests/lab/labctl.py\n" + yaml.safe_dump(data, sort_keys=False))


def cmd_image(args) -> int:
    with image_lock():
        path = ensure_image_locked(args.max_age_days)
        if args.prune:
            removed = prune_images(keep=path.name)
            log(f"images: {len(removed)} removed, {path.name} is the current recipe's")
    print(path)
    return 0


def cmd_up(args) -> int:
    lab = Lab(args.lab)
    platforms = load_topology(Path(args.spec))
    lab.up(platforms, args.timeout)
    if args.instance_config:
        write_yaml(Path(args.instance_config), lab.instance_config())
    if args.inventory:
        write_yaml(Path(args.inventory), lab.inventory(load_spec(Path(args.spec))))
    return 0


def cmd_down(args) -> int:
    labs = [Lab(p.name) for p in RUN.iterdir() if p.is_dir()] if args.all and RUN.exists() else []
    for name in args.lab or []:
        if name not in [lab.name for lab in labs]:
            labs.append(Lab(name))
    for lab in labs:
        if not lab.dir.exists():
            log(f"lab {lab.name}: none here, nothing to do")
            continue
        log(f"lab {lab.name}: powering off and removing")
        lab.down()
    if args.all:
        for pid in stray_qemu_pids():
            log(f"killing stray lab QEMU {pid}")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if args.instance_config:
        write_yaml(Path(args.instance_config), [])
    return 0


def cmd_power(args) -> int:
    vm = Lab(args.lab).vm(args.vm)
    if args.action == "off":
        vm.power_off()
    elif args.action == "on":
        vm.power_on()
        if args.wait:
            log(f"{vm.name}: SSH up after {vm.wait_ssh(args.timeout):.1f} s")
    elif args.action == "reset":
        vm.reset()
    elif args.action == "reimage":
        vm.reimage()
    print(vm.power_state())
    return 0


def cmd_link(args) -> int:
    Lab(args.lab).vm(args.vm).set_link(args.segment, args.state == "on")
    return 0


def cmd_disk(args) -> int:
    Lab(args.lab).vm(args.vm).disk(args.disk, args.action == "add")
    return 0


def cmd_console(args) -> int:
    print(Lab(args.lab).vm(args.vm).console_tail(args.tail))
    return 0


def cmd_ssh(args) -> int:
    vm = Lab(args.lab).vm(args.vm)
    argv = vm.ssh_argv(*args.command)
    if not args.command:
        argv.insert(1, "-t")
    return subprocess.run(argv, check=False).returncode


LIST_HEADER = ("# Each lab VM is a QEMU process renamed lab-<lab>-<vm>: `pgrep -a qemu-system` finds none;\n"
               "# its PID is below, and `pgrep -af process=lab-` lists them all.")


def cmd_list(_args) -> int:
    print(LIST_HEADER)
    procs = lab_processes()
    listed = set()
    for lab_dir in sorted(RUN.iterdir()) if RUN.exists() else []:
        lab = Lab(lab_dir.name)
        if not lab.exists():
            continue
        meta = lab.meta
        print(f"{lab.name} (ports {meta['port_base']}-{meta['port_base'] + PORT_STRIDE - 1}, "
              f"image {Path(meta.get('image', '?')).name})")
        for vm in lab.vms():
            pid = vm.pid()
            listed.add(pid)
            print(f"  {vm.name:10} {'On' if pid else 'Off':4} pid {pid or '-':<8} "
                  f"ssh 127.0.0.1:{vm.meta['ssh_port']}  process lab-{lab.name}-{vm.name}")
    others = [p for p in procs if p["pid"] not in listed]
    if others:
        # Orphans (their lab directory is gone) or labs of another LAB_RUN_DIR:
        # `down --all` kills the orphans.
        print(f"lab QEMU processes of no lab under {RUN}")
        for proc in others:
            print(f"  pid {proc['pid']:<8} {proc['name']}  (lab directory {proc['lab_dir'] or 'unknown'})")
    return 0


def vm_uuid(lab: str, vm: str) -> str:
    """A VM's system UUID (QEMU -uuid, the guest's SMBIOS product UUID): stable
    for a lab's VM, different between VMs and labs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bluemind-ha-lab:{lab}/{vm}"))


class RedfishDouble:
    """Stands in for a server's management controller (BMC): the part of the
    Redfish API that fence_redfish uses - service root, systems collection, one
    system with its PowerState, and the ComputerSystem.Reset action (On,
    ForceOff, ForceRestart, GracefulShutdown, GracefulRestart, PowerCycle) -
    behind HTTP basic authentication. Power actions act on the VM as pulling and
    plugging the power cord would: off stops QEMU at once, on boots from scratch."""

    SYSTEM = "/redfish/v1/Systems/1"
    RESET = SYSTEM + "/Actions/ComputerSystem.Reset"
    RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PowerCycle"]

    def __init__(self, vm: "VM"):
        self.vm = vm
        creds = {**DEFAULT_BMC, **(vm.meta["spec"].get("bmc") or {})}
        token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
        self.authorization = f"Basic {token}"
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, authorization: str, body: bytes) -> tuple[int, dict]:
        path = path.split("?")[0].rstrip("/") or "/"
        if method == "GET" and path == "/redfish":
            return 200, {"v1": "/redfish/v1/"}
        # The service root answers without credentials, as Redfish specifies.
        if authorization != self.authorization and path != "/redfish/v1":
            return 401, {"error": {"code": "Base.1.0.NoValidSession", "message": "bad credentials"}}
        if method == "GET" and path == "/redfish/v1":
            return 200, {"@odata.id": "/redfish/v1", "RedfishVersion": "1.6.0", "Name": "lab BMC double",
                         "Systems": {"@odata.id": "/redfish/v1/Systems"}}
        if method == "GET" and path == "/redfish/v1/Systems":
            return 200, {"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1,
                         "Members": [{"@odata.id": self.SYSTEM}]}
        if method == "GET" and path == self.SYSTEM:
            # UUID: what a real BMC reports from the server's firmware (Redfish
            # ComputerSystem.UUID), here the VM's QEMU -uuid.
            return 200, {"@odata.id": self.SYSTEM, "Id": "1", "Name": self.vm.name,
                         "UUID": vm_uuid(self.vm.lab.name, self.vm.name),
                         "PowerState": self.vm.power_state(),
                         "Actions": {"#ComputerSystem.Reset": {
                             "target": self.RESET, "ResetType@Redfish.AllowableValues": self.RESET_TYPES}}}
        if method == "POST" and path == self.RESET:
            try:
                reset = json.loads(body or b"{}").get("ResetType")
            except ValueError:
                reset = None
            if reset not in self.RESET_TYPES:
                return 400, {"error": {"code": "Base.1.0.ActionParameterNotSupported",
                                       "message": f"ResetType {reset!r}"}}
            with self.lock:
                if reset in ("ForceOff", "GracefulShutdown"):
                    self.vm.power_off()
                elif reset == "On":
                    self.vm.power_on()
                else:
                    self.vm.power_off()
                    self.vm.power_on()
            return 204, {}
        return 404, {"error": {"code": "Base.1.0.ResourceMissingAtURI", "message": path}}


def cmd_serve_bmc(args) -> int:
    import http.server
    import ssl

    lab = Lab(args.lab)
    services = lab.dir / "services"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(services / "bmc-cert.pem", services / "bmc-key.pem")
    servers = []
    for index, name in enumerate(lab.meta["vms"]):
        double = RedfishDouble(lab.vm(name))

        class Handler(http.server.BaseHTTPRequestHandler):
            bmc = double
            protocol_version = "HTTP/1.1"

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, data = self.bmc.handle(self.command, self.path, self.headers.get("Authorization", ""), body)
                payload = json.dumps(data).encode() if status != 204 else b""
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="lab BMC"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload)
                self.close_connection = True

            do_GET = answer
            do_POST = answer

            def log_message(self, format, *args):  # pylint: disable=redefined-builtin
                sys.stdout.write(f"{time.strftime('%H:%M:%S')} {self.bmc.vm.name} {format % args}\n")
                sys.stdout.flush()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", lab.port(BMC_OFFSET + index)), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


def cmd_bmc_relay(args) -> int:
    """One guest connection (QEMU guestfwd gives it on stdin/stdout) relayed to a
    port of the host: how the guests reach the lab's management controllers."""
    import selectors

    sock = socket.create_connection(("127.0.0.1", args.port), timeout=30)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "guest")
    sel.register(sock, selectors.EVENT_READ, "host")
    open_ends = 2
    while open_ends:
        for key, dummy in sel.select():
            if key.data == "guest":
                data = os.read(0, 65536)
                if not data:
                    sel.unregister(0)
                    open_ends -= 1
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    sel.unregister(sock)
                    open_ends -= 1
                    os.close(1)
                else:
                    os.write(1, data)
    return 0


NTP_EPOCH = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)


def ntp_stamp(seconds: float) -> bytes:
    whole = int(seconds) + NTP_EPOCH
    return struct.pack("!II", whole & 0xFFFFFFFF, int((seconds % 1) * (1 << 32)) & 0xFFFFFFFF)


def ntp_reply(request: bytes, received: float, now: float) -> bytes | None:
    """A server reply (RFC 5905, mode 4, stratum 1, reference "LOCL") to a client
    request, or None for anything that is not a client request."""
    if len(request) < 48 or request[0] & 0x7 != 3:
        return None
    version = (request[0] >> 3) & 0x7
    header = struct.pack("!BBbb", (0 << 6) | (version << 3) | 4, 1, request[2], -20)
    return (header + struct.pack("!II", 0, 1 << 8) + b"LOCL" + ntp_stamp(now - 1)
            + request[40:48] + ntp_stamp(received) + ntp_stamp(now))


def cmd_serve_power(args) -> int:
    """The lab's power service: each VM runs with -no-reboot, so a guest reboot
    ends its QEMU process; this boots it again in a new one within POWER_POLL
    seconds, unless the VM was powered off (labctl power off, a fence call) or
    powered itself off. Ends with the lab (stop_services, or its directory gone)."""
    lab = Lab(args.lab)
    while lab.exists():
        for vm in lab.vms():
            try:
                outcome = vm.restart_after_exit()
            except (OSError, LabError) as exc:
                # Not again and again: the VM stays off, as a failed power-on leaves it.
                with contextlib.suppress(OSError):
                    vm.want("off")
                outcome = f"could not boot again after its reboot, left off: {exc}"
            if outcome:
                log(f"{vm.name}: {outcome}")
        time.sleep(POWER_POLL)
    return 0


def cmd_serve_time(args) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    while True:
        data, peer = sock.recvfrom(512)
        received = time.time()
        reply = ntp_reply(data, received, time.time())
        if reply:
            sock.sendto(reply, peer)


def cmd_serve_repo(args) -> int:
    """A plain threaded HTTP file server of a directory, for the guests (10.0.2.2:PORT).
    Never serves a gnupg/ directory (the stand-in repository keeps its throwaway
    signing key there)."""
    import functools
    import http.server

    directory = Path(args.dir).resolve()
    if not directory.is_dir():
        raise LabError(f"serve-repo: {directory} is not a directory")
    hidden = directory / "gnupg"

    class Handler(http.server.SimpleHTTPRequestHandler):
        def send_head(self):
            target = Path(self.translate_path(self.path)).resolve()
            if target == hidden or hidden in target.parents:
                self.send_error(404)
                return None
            return super().send_head()

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {format % args}\n")
            sys.stdout.flush()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port),
                                             functools.partial(Handler, directory=str(directory)))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


def cmd_repo(args) -> int:
    """Build the BlueMind stand-in repository (a test double, tests/lab/bm_standin)
    for the lab's repository URL into DIR, serve it to the lab's guests, and print
    what was built (URL, apt line, subscription archive, signing key) as JSON."""
    import importlib.util

    lab = Lab(args.lab)
    if not lab.exists():
        raise LabError(f"lab {args.lab} does not exist")
    source = Path(__file__).resolve().parent / "bm_standin" / "build.py"
    spec = importlib.util.spec_from_file_location("bm_standin_build", source)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    directory = Path(args.dir).resolve()
    url = f"http://{HOST_FROM_GUEST}:{lab.port(REPO_OFFSET)}"
    built = builder.build(directory, url, args.versions.split(","))
    served = lab.start_repo(directory)
    print(json.dumps(dict(built, url=served, directory=str(directory))))
    return 0


def cmd_info(args) -> int:
    lab = Lab(args.lab)
    if not lab.exists():
        raise LabError(f"lab {args.lab} does not exist")
    print(json.dumps(lab.meta))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("image", help="build or reuse the current recipe's image")
    p.add_argument("--prune", action="store_true",
                   help="then remove every other cached image that no lab uses")
    p.add_argument("--max-age-days", type=float, default=None,
                   help="when building, remove the other images unused for longer than this "
                        f"(default LAB_IMAGE_MAX_AGE_DAYS, else {IMAGE_MAX_AGE_DAYS:.0f}); never one a lab uses")
    p.set_defaults(func=cmd_image)
    p = sub.add_parser("up")
    p.add_argument("--lab", required=True)
    p.add_argument("--spec", required=True)
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds each VM has to answer SSH (default LAB_BOOT_TIMEOUT, else {BOOT_TIMEOUT:.0f})")
    p.add_argument("--instance-config")
    p.add_argument("--inventory")
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="power off and remove the named labs (or every lab of the machine: --all)")
    p.add_argument("--lab", action="append", help="a lab to take down; repeat for several; absent ones are skipped")
    p.add_argument("--all", action="store_true",
                   help="every lab of this machine, other checkouts' included, and orphaned lab QEMUs")
    p.add_argument("--instance-config")
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("power")
    p.add_argument("lab")
    p.add_argument("vm")
    # reimage: off, then a blank node (base image, blank disks) with the same name
    # and addresses, as after a reinstallation; power it on afterwards.
    p.add_argument("action", choices=["off", "on", "reset", "status", "reimage"])
    p.add_argument("--wait", action="store_true", help="with on: wait for SSH")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"with --wait (default LAB_BOOT_TIMEOUT, else {BOOT_TIMEOUT:.0f})")
    p.set_defaults(func=cmd_power)
    p = sub.add_parser("link")
    p.add_argument("lab")
    p.add_argument("vm")
    p.add_argument("segment")
    p.add_argument("state", choices=["off", "on"])
    p.set_defaults(func=cmd_link)
    p = sub.add_parser("disk")
    p.add_argument("lab")
    p.add_argument("vm")
    p.add_argument("disk")
    p.add_argument("action", choices=["del", "add"])
    p.set_defaults(func=cmd_disk)
    p = sub.add_parser("console")
    p.add_argument("lab")
    p.add_argument("vm")
    p.add_argument("--tail", type=int, default=40)
    p.set_defaults(func=cmd_console)
    p = sub.add_parser("ssh")
    p.add_argument("lab")
    p.add_argument("vm")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_ssh)
    p = sub.add_parser("list", help="every lab's VMs: state, PID, SSH port (find lab QEMUs: pgrep -af process=lab-)")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("repo", help="build the BlueMind stand-in repository (test double) and serve it to the lab")
    p.add_argument("--lab", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--versions", default="5.1.100,5.1.101")
    p.set_defaults(func=cmd_repo)
    p = sub.add_parser("info", help="print the lab's metadata (ports, time server) as JSON")
    p.add_argument("--lab", required=True)
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("serve-bmc", help="the VMs' management controllers, Redfish test doubles (started by up)")
    p.add_argument("--lab", required=True)
    p.set_defaults(func=cmd_serve_bmc)
    p = sub.add_parser("bmc-relay", help="relay a guest connection (stdin/stdout) to a host port (QEMU guestfwd)")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_bmc_relay)
    p = sub.add_parser("serve-power", help="boot a VM again after its guest rebooted (started by up)")
    p.add_argument("--lab", required=True)
    p.set_defaults(func=cmd_serve_power)
    p = sub.add_parser("serve-time", help="NTP server for the guests (started by up)")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_serve_time)
    p = sub.add_parser("serve-repo", help="serve a directory (a package repository) over HTTP to the guests")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_serve_repo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "cmd", None) == "down" and not (args.lab or args.all):
        parser.error("down needs --lab NAME or --all")
    try:
        if getattr(args, "timeout", False) is None:
            args.timeout = boot_timeout()
        return args.func(args)
    except LabError as exc:
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
