# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bluemind_ha_node - what the programs of a BlueMind HA node share.

Installed beside them in /usr/local/lib/bluemind-ha (role node), imported as a
plain module: a script's directory is first on sys.path, even under python3 -S.
Each program keeps its own commands, exit codes, messages and journal
identifier; this module only holds the plumbing they had each copied.

The failover controller's health check imports it every few seconds as an
unprivileged user: standard library only, nothing heavy at import time.
"""
import contextlib
import json
import os
import re
import subprocess
import sys
import syslog

OK, FAILED, USAGE = 0, 1, 2


class NodeError(Exception):
    """A failure that ends the program with its exit code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- commands

def run(argv, timeout, check=True, stdin=None, error=NodeError, words=None, tail=400):
    """Run argv (a list: no shell) for at most timeout seconds. A command that
    cannot start, overruns or (with check) fails raises error(FAILED, ...) naming
    its first `words` arguments (all by default) and the last `tail` characters of
    what it said."""
    shown = " ".join(argv if words is None else argv[:words])
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise error(FAILED, f"{shown} did not finish within {timeout} s") from exc
    except OSError as exc:
        raise error(FAILED, f"cannot run {argv[0]}: {exc}") from exc
    if check and proc.returncode != 0:
        raise error(FAILED, f"{shown} failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-tail:]}")
    return proc


# ---------------------------------------------------------------- journal

def openlog(identifier):
    syslog.openlog(identifier, syslog.LOG_PID, syslog.LOG_DAEMON)


def stderr_is_journal():
    """Whether standard error is the journal stream systemd gave this process.
    JOURNAL_STREAM alone is not enough: a child whose stderr its caller captures
    inherits the variable, and the caller needs that output."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return stream == f"{info.st_dev}:{info.st_ino}"


def log(message, priority=syslog.LOG_NOTICE):
    """To the journal, under the identifier given to openlog; to standard error
    too unless that is the journal already (each record would be there twice)."""
    syslog.syslog(priority, message)
    if stderr_is_journal():
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(message + "\n")


# ---------------------------------------------------------------- configuration

def load(path, required, error=NodeError):
    """The JSON configuration at path. Every key in required must be there: the
    roles render each one from their defaults, so a missing key means a file the
    role did not write, and guessing would hide it."""
    try:
        with open(path, encoding="utf-8") as handle:
            conf = json.load(handle)
    except (OSError, ValueError) as exc:
        raise error(USAGE, f"cannot read {path}: {exc}") from exc
    if not isinstance(conf, dict):
        raise error(USAGE, f"cannot read {path}: not a JSON object")
    missing = [key for key in required if key not in conf]
    if missing:
        raise error(USAGE, f"{path} lacks {', '.join(missing)}")
    return conf


# ---------------------------------------------------------------- markers

def write_marker(directory, name, content):
    """Replace a JSON marker at once: a reader never sees half of one."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    # Readable by keepalived's unprivileged check, whatever the umask made it.
    os.chmod(directory, 0o755)
    tmp = os.path.join(directory, f".{name}.new")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, name))


def read_marker(directory, name):
    """A marker's content, or None when it is absent or unreadable."""
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def remove_marker(directory, name):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, name))


# ---------------------------------------------------------------- mounts

MOUNTINFO = "/proc/self/mountinfo"


def unescape(text):
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text):
    """The mounts of a mountinfo text, in mount order: dicts with device
    ((major, minor)), root, target and source."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 5 or ":" not in fields[2]:
            continue
        sep = fields.index("-")
        major, minor = fields[2].split(":", 1)
        found.append({"device": (int(major), int(minor)), "root": unescape(fields[3]),
                      "target": unescape(fields[4]),
                      "source": fields[sep + 2] if len(fields) > sep + 2 else ""})
    return found


def read_mountinfo(path=MOUNTINFO):
    with open(path, encoding="utf-8") as handle:
        return parse_mountinfo(handle.read())


def device_mounted(device, path=MOUNTINFO):
    """Whether the block device (a path) is mounted in this namespace."""
    rdev = os.stat(device).st_rdev
    return any(m["device"] == (os.major(rdev), os.minor(rdev)) for m in read_mountinfo(path))


# ---------------------------------------------------------------- block devices

def signatures(device, run_unchecked):
    """Every signature on the device: wipefs lists them without erasing, blkid's
    low-level probe adds what wipefs does not name. run_unchecked(argv) runs a
    command without raising on its exit code (the program's own runner)."""
    found = []
    wipefs = run_unchecked(["wipefs", "--json", device])
    if wipefs.returncode == 0 and wipefs.stdout.strip():
        for sig in json.loads(wipefs.stdout).get("signatures", []):
            found.append({"type": sig.get("type"), "label": sig.get("label"), "offset": sig.get("offset"),
                          "uuid": sig.get("uuid")})
    probe = run_unchecked(["blkid", "-p", "-o", "export", device])
    if probe.returncode == 0:
        values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
        kind = values.get("TYPE") or values.get("PTTYPE")
        if kind and not any(s["type"] == kind for s in found):
            found.append({"type": kind, "label": values.get("LABEL"), "offset": None,
                          "uuid": values.get("UUID") or values.get("PTUUID")})
    return found


def device_identity(device, run_unchecked):
    """What names a disk whatever its path: its WWN and serial number as udev
    reads them from the hardware. A confirmation to erase a disk must name one
    of these: a /dev name can move to another disk after a reinstall, these do
    not. The same udev properties, in the same order, as the ha_node_info
    module's wwn and serial (preflight's messages name the disk by them)."""
    proc = run_unchecked(["udevadm", "info", "--query=property", "--name", device])
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line) \
        if proc.returncode == 0 else {}
    wwn = props.get("ID_WWN_WITH_EXTENSION") or props.get("ID_WWN") or None
    serial = props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL") or None
    return {"wwn": wwn, "serial": serial, "names": [n for n in (wwn, serial) if n]}


def confirms(confirm, names):
    """Whether a one-shot confirmation (one identity, or several separated by
    commas: one per device the run may erase) names one of a device's
    identities. Case does not matter: WWNs and WWIDs are hexadecimal."""
    given = [c.strip().lower() for c in (confirm or "").split(",") if c.strip()]
    return any(n.lower() in given for n in names if n)


# ---------------------------------------------------------------- DRBD

PROC_DRBD = "/proc/drbd"


def parse_proc_drbd(text, minor):
    """State of one minor from /proc/drbd (DRBD 8.4); {} when it is not there."""
    state = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(rf"\s*{minor}: cs:(\S+) ro:(\S+)/(\S+) ds:(\S+)/(\S+)", line)
        if not match:
            continue
        flags = line.split()[-1] if len(line.split()) > 5 else ""
        state = {"connection": match.group(1), "role": match.group(2), "peer_role": match.group(3),
                 "disk": match.group(4), "peer_disk": match.group(5), "io_suspended": flags[:1] == "s"}
        for follow in lines[index + 1:index + 5]:
            progress = re.search(r"sync'ed:\s*([\d.]+)%", follow)
            if progress:
                state["sync_percent"] = float(progress.group(1))
            speed = re.search(r"speed:\s*([\d,]+)\s*\(", follow)
            if speed:
                state["sync_kib_per_s"] = int(speed.group(1).replace(",", ""))
            eta = re.search(r"finish:\s*(\d+):(\d+):(\d+)", follow)
            if eta:
                state["sync_eta_s"] = int(eta.group(1)) * 3600 + int(eta.group(2)) * 60 + int(eta.group(3))
        break
    return state


def read_proc_drbd(minor, path=PROC_DRBD):
    """parse_proc_drbd of the running kernel, or None without the module."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_proc_drbd(handle.read(), minor)
    except OSError:
        return None


# ---------------------------------------------------------------- arguments

def start(argv, program, doc, commands, config, extra=True):
    """Open the journal under the program's name and read its command line,
    [--config FILE] COMMAND [ARGS]: (config path, command, args), or the exit
    code when there is nothing to run: 0 after --help (the program's docstring),
    2 after a usage error. Without extra, a command takes no arguments."""
    openlog(program)
    args = list(argv)
    if "--help" in args or "-h" in args:
        print(doc)
        return OK
    path = config
    if len(args) >= 2 and args[0] == "--config":
        path, args = args[1], args[2:]
    if not args or args[0] not in commands or (not extra and len(args) != 1):
        sys.stderr.write(f"usage: {program} [--config FILE] {'|'.join(commands)} (--help for more)\n")
        return USAGE
    return path, args[0], args[1:]
