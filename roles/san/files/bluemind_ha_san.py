# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bluemind-ha-san - the shared LUN of a BlueMind HA pair: iSCSI paths,
multipath map, filesystem and SCSI-3 persistent reservations.

usage: bluemind-ha-san [--config FILE] COMMAND [options]

Commands the failover controller and the operators use:
  claim     take the LUN for this node: register this node's key if needed,
            then reserve (Write Exclusive - Registrants Only), or preempt the
            other node's key when it holds the reservation. The node that lost
            the reservation can no longer write to the LUN. A holder that
            releases meanwhile is no conflict: the claim then reserves.
            Idempotent.
  release   give up the reservation held by this node (refused while the
            filesystem is mounted here). The key stays registered; a key
            preempted by the peer's takeover is registered again once the
            filesystem is unmounted here (the node is a passive again).
  register  register this node's key on every path (unfencing a node that
            rejoins). Refused while the filesystem is mounted here without
            the reservation: that is a fenced node that still believes it
            is active.
  holder    print the node that holds the reservation, or "none"
  status    the map, its paths, the registered keys, the holder and the
            mounts; --json for a machine-readable form

Commands the role uses (they print JSON with "changed"):
  login        iSCSI only: discover the configured portals, set the session
               timeouts for multipath, log in to every portal (one session
               per portal) and make the logins automatic at boot
  map          make sure the multipath map of the LUN exists (reconfigure
               multipathd with --reconfigure, or when the running map lacks
               its alias or key; never flush a map), then wait until it has
               --paths N active paths
  mkfs         create the filesystem when the LUN is blank; leave the
               pair's filesystem as it is. A LUN carrying anything else is
               erased only with --confirm WWID naming this LUN (the run's
               one-shot bluemind_ha_format_confirm), and never while a node
               holds its reservation or when what it carries is the
               filesystem this program created for the pair (its UUID is
               recorded in /var/lib/bluemind-ha/san-filesystem.json, on the
               node that formats). --check reports what would be done
  config-test  FILE: check a multipath configuration file with multipath's
               own parser before it is installed

Exit codes:
  0  done (or nothing to do)
  1  a command failed
  2  usage or configuration error
  3  the LUN's multipath map is missing or has no usable path
  4  reservation conflict: another node took the LUN during the call
  5  timeout waiting for paths
  6  busy: the filesystem is mounted on this node
  7  the LUN carries a signature it may not erase (safe mode)

Every state change goes to the journal (identifier bluemind-ha-san) with its
duration.
"""
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time

import bluemind_ha_node as nodelib

CONFIG = "/etc/bluemind-ha/san.json"
LOCK = "/run/bluemind-ha/san.lock"
OK, FAILED, USAGE, NO_DEVICE, CONFLICT, TIMEOUT, BUSY, FOREIGN = 0, 1, 2, 3, 4, 5, 6, 7
PR_TYPE = "5"  # Write Exclusive - Registrants Only
# Reservation commands a claim may send when the holder it read releases meanwhile.
CLAIM_ATTEMPTS = 3
COMMANDS = ("claim", "release", "register", "holder", "status", "login", "map", "mkfs", "config-test")


class SanError(nodelib.NodeError):
    """A failure of bluemind-ha-san, with its exit code."""


# To the journal (identifier bluemind-ha-san) and to the caller's stderr.
log = nodelib.log


def run(argv, check=True, stdin=None):
    """Run a command (120 s at most). A failure raises SanError naming the command."""
    return nodelib.run(argv, 120, check, stdin, error=SanError, words=4, tail=300)


def key_int(text):
    return int(str(text), 16)


# ---------------------------------------------------------------- parsing

def parse_keys(text):
    """Registered keys from `mpathpersist -i -k` (one line per I_T nexus)."""
    keys = []
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(0x[0-9a-fA-F]+)\s*", line)
        if match:
            keys.append(key_int(match.group(1)))
    return keys


def parse_reservation(text):
    """(key, type) of the reservation from `mpathpersist -i -r`, or None."""
    if re.search(r"NO reservation held", text):
        return None
    key = re.search(r"Key\s*=\s*(0x[0-9a-fA-F]+)", text)
    kind = re.search(r"type\s*=\s*([^\n]+)", text)
    if not key:
        raise SanError(FAILED, f"cannot read the reservation: {text.strip()[:200]}")
    return key_int(key.group(1)), (kind.group(1).strip() if kind else "unknown")


def parse_paths(text, alias):
    """Paths of the map from `multipathd show paths raw format "%m %d %t %T %o"`."""
    paths = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0] == alias:
            paths.append({"device": fields[1], "dm_state": fields[2], "checker": fields[3], "state": fields[4]})
    return paths


def parse_iscsiadm_records(text):
    """(portal, target) pairs from `iscsiadm -m node` or `-m session`."""
    records = []
    for line in text.splitlines():
        match = re.search(r"(\[?[0-9A-Fa-f.:]+\]?):(\d+),\d+\s+(\S+)", line)
        if match:
            records.append((match.group(1).strip("[]"), match.group(3)))
    return records


def parse_settings(text):
    settings = {}
    for line in text.splitlines():
        if " = " in line:
            name, value = line.split(" = ", 1)
            settings[name.strip()] = value.strip()
    return settings


def mounted_devices(mountinfo):
    """(major, minor) of every mounted block device, from /proc/self/mountinfo."""
    return {mount["device"] for mount in nodelib.parse_mountinfo(mountinfo)}


# ---------------------------------------------------------------- state

class Lun:
    def __init__(self, conf):
        self.conf = conf
        self.device = conf["device"]
        self.key = key_int(conf["key"])
        self.names = {key_int(k): n for n, k in conf["keys"].items()}

    def name(self, key):
        return self.names.get(key, f"unknown key 0x{key:x}")

    def present(self):
        return os.path.exists(self.device)

    def require(self):
        if not self.present():
            raise SanError(NO_DEVICE, f"{self.device} does not exist: the LUN's multipath map is missing "
                                      "(check `multipath -ll` and the paths)")
        if not any(p["dm_state"] == "active" for p in self.paths()):
            raise SanError(NO_DEVICE, f"{self.device} has no usable path (check the fabric links and "
                                      "`multipathd show paths`)")

    def keys(self):
        return parse_keys(run(["mpathpersist", "--in", "--read-keys", self.device]).stdout)

    def reservation(self):
        return parse_reservation(run(["mpathpersist", "--in", "--read-reservation", self.device]).stdout)

    def mounted(self):
        if not self.present():
            return False
        rdev = os.stat(self.device).st_rdev
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            return (os.major(rdev), os.minor(rdev)) in mounted_devices(handle.read())

    def prout(self, *args):
        return run(["mpathpersist", "--out", *args, self.device], check=False)

    def paths(self):
        out = run(["multipathd", "show", "paths", "raw", "format", "%m %d %t %T %o"], check=False).stdout
        return parse_paths(out, self.conf["alias"])


def do_register(lun):
    lun.require()
    if lun.key in lun.keys():
        return False
    holder = lun.reservation()
    if lun.mounted() and (holder is None or holder[0] != lun.key):
        raise SanError(BUSY, f"the filesystem of {lun.device} is mounted on this node, which is not registered: "
                             "this node was fenced. Unmount it (stop BlueMind) before registering again")
    lun.prout("--register-ignore", f"--param-sark=0x{lun.key:x}")
    if lun.key not in lun.keys():
        raise SanError(FAILED, f"registering key 0x{lun.key:x} on {lun.device} failed")
    log(f"register: key 0x{lun.key:x} of {lun.conf['node']} registered on {lun.device}")
    return True


def do_claim(lun):
    lun.require()
    start = time.monotonic()
    changed = do_register(lun) if not lun.mounted() else False
    keys = lun.keys()
    if lun.key not in keys:
        raise SanError(CONFLICT, f"this node's key 0x{lun.key:x} is not registered on {lun.device} "
                                 "(fenced while mounted): unmount, then claim again")
    holder = lun.reservation()
    if holder and holder[0] == lun.key:
        return changed, "already held"
    done = []
    for _attempt in range(CLAIM_ATTEMPTS):
        if holder is None:
            lun.prout("--reserve", f"--param-rk=0x{lun.key:x}", f"--prout-type={PR_TYPE}")
            done.append("reserved")
        else:
            lun.prout("--preempt", f"--param-rk=0x{lun.key:x}", f"--param-sark=0x{holder[0]:x}",
                      f"--prout-type={PR_TYPE}")
            done.append(f"preempted {lun.name(holder[0])}")
        holder = lun.reservation()
        # Held by nobody: the holder released between the read above and the
        # preempt (a peer finishing its deactivation while this node takes over).
        # A PREEMPT naming a key that holds no reservation only removes that key's
        # registrations (SPC-4, 5.13.11.2.4): reserve it now. Held by another key:
        # that node claimed meanwhile; taking it back would only bounce the LUN.
        if holder is not None:
            break
    if not holder or holder[0] != lun.key:
        who = lun.name(holder[0]) if holder else "nobody"
        raise SanError(CONFLICT, f"claim of {lun.device} failed after {', then '.join(done)}: "
                                 f"the reservation is held by {who}")
    how = ", then ".join(done)
    log(f"claim: {lun.conf['node']} {how} {lun.device} in {time.monotonic() - start:.2f} s")
    return True, how


def do_release(lun):
    """Give up this node's reservation, then leave the node a registered passive:
    a node whose key the peer's takeover preempted (it was still stopping
    BlueMind) registers again once its filesystem is unmounted, as at boot."""
    lun.require()
    changed = False
    holder = lun.reservation()
    if holder and holder[0] == lun.key:
        if lun.mounted():
            raise SanError(BUSY, f"the filesystem of {lun.device} is still mounted on this node: unmount it first")
        lun.prout("--release", f"--param-rk=0x{lun.key:x}", f"--prout-type={PR_TYPE}")
        after = lun.reservation()
        if after and after[0] == lun.key:
            raise SanError(FAILED, f"release of {lun.device} failed")
        log(f"release: {lun.conf['node']} released {lun.device}")
        changed = True
    if not lun.mounted() and lun.key not in lun.keys():
        changed = do_register(lun) or changed
    return changed


def status(lun):
    info = {"node": lun.conf["node"], "device": lun.device, "present": lun.present(), "paths": lun.paths(),
            "registered": [], "holder": None, "registered_here": False, "held_here": False, "mounted_here": False}
    if info["present"]:
        keys = lun.keys()
        info["registered"] = sorted({lun.name(k) for k in keys})
        holder = lun.reservation()
        info["holder"] = lun.name(holder[0]) if holder else None
        info["reservation_type"] = holder[1] if holder else None
        info["registered_here"] = lun.key in keys
        info["held_here"] = bool(holder) and holder[0] == lun.key
        info["mounted_here"] = lun.mounted()
    info["active_paths"] = sum(1 for p in info["paths"] if p["dm_state"] == "active" and p["checker"] == "ready")
    return info


# ---------------------------------------------------------------- iSCSI

ISCSI_SETTINGS = {
    "node.startup": "automatic",
    "node.conn[0].startup": "automatic",
}


def wanted_settings(iscsi):
    wanted = dict(ISCSI_SETTINGS)
    wanted["node.session.timeo.replacement_timeout"] = str(iscsi["replacement_timeout"])
    wanted["node.conn[0].timeo.noop_out_interval"] = str(iscsi["noop_interval"])
    wanted["node.conn[0].timeo.noop_out_timeout"] = str(iscsi["noop_timeout"])
    chap = iscsi.get("chap") or {}
    if chap.get("username"):
        wanted["node.session.auth.authmethod"] = "CHAP"
        wanted["node.session.auth.username"] = chap["username"]
        wanted["node.session.auth.password"] = chap["password"]
        if chap.get("username_in"):
            wanted["node.session.auth.username_in"] = chap["username_in"]
            wanted["node.session.auth.password_in"] = chap["password_in"]
    else:
        wanted["node.session.auth.authmethod"] = "None"
    return wanted


def portal_arg(portal, port):
    """iscsiadm's -p argument: an IPv6 address goes in brackets."""
    return f"[{portal}]:{port}" if ":" in portal else f"{portal}:{port}"


def iscsi_discover(portal, port, chap):
    target = portal_arg(portal, port)
    if chap.get("username") and chap.get("discovery", True):
        run(["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", target, "-o", "new"], check=False)
        for name, value in (("discovery.sendtargets.auth.authmethod", "CHAP"),
                            ("discovery.sendtargets.auth.username", chap["username"]),
                            ("discovery.sendtargets.auth.password", chap["password"])):
            run(["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", target, "-o", "update",
                 "-n", name, "-v", value])
        run(["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", target, "--discover"])
    else:
        run(["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", target])


def do_login(conf):
    iscsi = conf["iscsi"] or {}
    portals = iscsi.get("portals") or []
    if not portals:
        return {"changed": False, "sessions": []}
    port = iscsi["port"]
    chap = iscsi.get("chap") or {}
    changed = False
    records = parse_iscsiadm_records(run(["iscsiadm", "-m", "node"], check=False).stdout)
    for portal in portals:
        if not any(p == portal for p, t in records):
            iscsi_discover(portal, port, chap)
            changed = True
    records = parse_iscsiadm_records(run(["iscsiadm", "-m", "node"], check=False).stdout)
    wanted = wanted_settings(iscsi)
    for portal, target in records:
        record = ["iscsiadm", "-m", "node", "-T", target, "-p", portal_arg(portal, port)]
        current = parse_settings(run(record + ["-S"]).stdout)
        goal = wanted if portal in portals else {"node.startup": "manual", "node.conn[0].startup": "manual"}
        for name, value in goal.items():
            if current.get(name) != value:
                run(record + ["-o", "update", "-n", name, "-v", value])
                changed = True
    sessions = parse_iscsiadm_records(run(["iscsiadm", "-m", "session"], check=False).stdout)
    for portal, target in records:
        if portal in portals and (portal, target) not in sessions:
            run(["iscsiadm", "-m", "node", "-T", target, "-p", portal_arg(portal, port), "--login"])
            log(f"login: session to {target} through {portal} opened")
            changed = True
    # A running session keeps its recovery timeout until the next login: set it live.
    for entry in os.listdir("/sys/class/iscsi_session") if os.path.isdir("/sys/class/iscsi_session") else []:
        path = f"/sys/class/iscsi_session/{entry}/recovery_tmo"
        try:
            with open(path, encoding="utf-8") as handle:
                if handle.read().strip() != str(iscsi["replacement_timeout"]):
                    with open(path, "w", encoding="utf-8") as out:
                        out.write(str(iscsi["replacement_timeout"]))
                    changed = True
        except OSError:
            continue
    sessions = parse_iscsiadm_records(run(["iscsiadm", "-m", "session"], check=False).stdout)
    missing = [p for p in portals if not any(sp == p for sp, t in sessions)]
    if missing:
        raise SanError(FAILED, f"no iSCSI session through portal(s) {', '.join(missing)} after login: "
                               "check the portal addresses, the fabric links and the CHAP credentials")
    with open("/etc/iscsi/initiatorname.iscsi", encoding="utf-8") as handle:
        initiator = [line.split("=", 1)[1].strip() for line in handle if line.startswith("InitiatorName=")]
    return {"changed": changed, "sessions": sorted({p for p, t in sessions}),
            "initiator": initiator[0] if initiator else ""}


# ---------------------------------------------------------------- multipath

def config_problems(text):
    """multipath's complaints about its configuration, from its stderr."""
    words = ("invalid", "error", "unknown", "missing", "unmatched", "ignoring")
    return [line.strip() for line in text.splitlines() if any(w in line.lower() for w in words)]


def do_config_test(path):
    """Parse FILE as /etc/multipath/conf.d's only drop-in, in a private mount
    namespace, so the live configuration is not touched."""
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(path, os.path.join(scratch, "bluemind-ha.conf"))
        proc = run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" /etc/multipath/conf.d && exec multipath -t', "sh", scratch], check=False)
    problems = config_problems(proc.stderr)
    if proc.returncode != 0 or problems:
        raise SanError(USAGE, f"multipath rejects {path}: {'; '.join(problems) or proc.stderr.strip()}")
    return {"changed": False}


def map_is_current(conf):
    """Whether multipathd runs our map under its alias with our key."""
    maps = run(["multipathd", "show", "maps", "raw", "format", "%n %w"], check=False).stdout.split("\n")
    if f"{conf['alias']} {conf['wwid']}" not in [m.strip() for m in maps]:
        return False
    prkey = run(["multipathd", "getprkey", "map", conf["alias"]], check=False).stdout.strip()
    try:
        return key_int(prkey) == key_int(conf["key"])
    except ValueError:
        return False


def do_map(conf, want_paths, timeout, reconfigure=False):
    lun = Lun(conf)
    changed = False
    wwids = ""
    if os.path.exists("/etc/multipath/wwids"):
        with open("/etc/multipath/wwids", encoding="utf-8") as handle:
            wwids = handle.read()
    if f"/{conf['wwid']}/" not in wwids:
        run(["multipath", "-a", conf["wwid"]])
        changed = True
    if changed or reconfigure or not map_is_current(conf):
        run(["multipathd", "reconfigure"])
        log(f"map: multipathd reconfigured for {conf['alias']} ({conf['wwid']})")
        changed = True
    deadline = time.monotonic() + timeout
    while True:
        info = status(lun) if lun.present() else {"active_paths": 0, "paths": []}
        if info["active_paths"] >= want_paths:
            return {"changed": changed, "device": lun.device, "paths": info["paths"]}
        if time.monotonic() > deadline:
            raise SanError(TIMEOUT, f"{lun.device} has {info['active_paths']} active path(s) of the {want_paths} "
                                    f"expected after {timeout} s: {info['paths']}")
        time.sleep(1)


# ---------------------------------------------------------------- filesystem

def signatures(device):
    return nodelib.signatures(device, lambda argv: run(argv, check=False))


STATE_DIR = "/var/lib/bluemind-ha"
FILESYSTEM_RECORD = "san-filesystem.json"


def pair_filesystem(conf):
    """The UUID of the filesystem this program created on this LUN (or found
    there, the pair's), from this node's record; None without one."""
    record = nodelib.read_marker(STATE_DIR, FILESYSTEM_RECORD) or {}
    return record.get("uuid") if record.get("wwid") == conf["wwid"] else None


def record_filesystem(conf, lun, fstype, label):
    uuid = run(["blkid", "-p", "-s", "UUID", "-o", "value", lun.device], check=False).stdout.strip()
    if uuid and pair_filesystem(conf) != uuid:
        nodelib.write_marker(STATE_DIR, FILESYSTEM_RECORD,
                             {"wwid": conf["wwid"], "uuid": uuid, "type": fstype, "label": label})
    return uuid


def same_wwid(one, other):
    """Whether two spellings name one WWID: case, the naa./0x prefixes and the
    NAA designator 3 that scsi_id puts in front do not matter."""
    def normal(text):
        text = text.strip().lower()
        for prefix in ("naa.", "wwn-0x", "0x"):
            text = text[len(prefix):] if text.startswith(prefix) else text
        return text[1:] if len(text) in (17, 33) and text.startswith("3") else text
    return bool(one.strip()) and normal(one) == normal(other)


def do_mkfs(conf, fstype, label, confirm, check, options):
    lun = Lun(conf)
    lun.require()
    found = signatures(lun.device)
    if len(found) == 1 and found[0]["type"] == fstype and found[0]["label"] == label:
        if not check:
            record_filesystem(conf, lun, fstype, label)
        return {"changed": False, "filesystem": fstype, "label": label}
    names = ", ".join(f"{s['type']}" + (f" labelled {s['label']}" if s.get("label") else "") for s in found)
    # A held reservation means a node of the pair uses the LUN (or a fenced one
    # still thinks so): nothing is formatted under it, blank or not.
    holder = lun.reservation()
    if holder:
        raise SanError(FOREIGN, f"{lun.device} (WWID {conf['wwid']}) is reserved by {lun.name(holder[0])}: a node "
                                f"uses it, it is never formatted then (it carries {names or 'nothing'}). Nothing was "
                                f"changed; if the filesystem type or label in the inventory changed, set them back "
                                f"to the filesystem the LUN carries")
    if found:
        ours = pair_filesystem(conf)
        if ours and any(s.get("uuid") == ours for s in found):
            raise SanError(FOREIGN, f"{lun.device} (WWID {conf['wwid']}) carries {names}: the pair's own "
                                    f"filesystem (UUID {ours}), created here, not the {fstype} filesystem labelled "
                                    f"{label} the inventory names now. It is never formatted again: set "
                                    f"san_filesystem and san_filesystem_label back to what it carries (a label "
                                    f"can be changed by hand with e2label or xfs_admin)")
        if not any(same_wwid(given, conf["wwid"]) for given in (confirm or "").split(",")):
            raise SanError(FOREIGN, f"{lun.device} (WWID {conf['wwid']}) carries {names}, not the {fstype} "
                                    f"filesystem labelled {label} this collection creates. Safe mode refuses to "
                                    f"format it. If that data is not needed, run once with "
                                    f"-e bluemind_ha_format_confirm={conf['wwid']} (it will be destroyed)"
                                    + (f"; {confirm} does not name this LUN" if confirm else ""))
    if check:
        return {"changed": True, "would": "wipe and format" if found else "format"}
    if lun.mounted():
        raise SanError(BUSY, f"{lun.device} is mounted on this node")
    start = time.monotonic()
    if found:
        run(["wipefs", "--all", lun.device])
    argv = {"ext4": ["mkfs.ext4", "-q", "-L", label, "-E", "nodiscard"],
            "xfs": ["mkfs.xfs", "-q", "-L", label, "-K"]}[fstype]
    run(argv + list(options) + [lun.device])
    uuid = record_filesystem(conf, lun, fstype, label)
    log(f"mkfs: {fstype} labelled {label} created on {lun.device} (UUID {uuid}) in {time.monotonic() - start:.1f} s"
        + (f" (wiped: {', '.join(s['type'] for s in found)})" if found else ""))
    return {"changed": True, "filesystem": fstype, "label": label, "wiped": [s["type"] for s in found]}


# ---------------------------------------------------------------- main

# Every key is rendered by the role: a missing one is an error.
REQUIRED = ("node", "alias", "device", "wwid", "key", "keys", "iscsi")


def load(path):
    return nodelib.load(path, REQUIRED, SanError)


def option(args, name, default=None):
    if name in args:
        index = args.index(name)
        if index + 1 >= len(args):
            raise SanError(USAGE, f"{name} needs a value")
        value = args[index + 1]
        del args[index:index + 2]
        return value
    return default


def flag(args, name):
    if name in args:
        args.remove(name)
        return True
    return False


def locked(func, *args):
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    with open(LOCK, "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        return func(*args)


def dispatch(conf, command, args):
    lun = Lun(conf)
    if command == "claim":
        changed, how = locked(do_claim, lun)
        print(json.dumps({"changed": changed, "holder": conf["node"], "how": how}))
    elif command == "release":
        print(json.dumps({"changed": locked(do_release, lun)}))
    elif command == "register":
        print(json.dumps({"changed": locked(do_register, lun)}))
    elif command == "holder":
        lun.require()
        holder = lun.reservation()
        print(lun.name(holder[0]) if holder else "none")
    elif command == "status":
        info = status(lun)
        if flag(args, "--json"):
            print(json.dumps(info, indent=2))
        else:
            print(f"LUN {conf['wwid']} as {lun.device}: {'present' if info['present'] else 'MISSING'}")
            for path in info["paths"]:
                print(f"  path {path['device']}: {path['dm_state']} {path['checker']} {path['state']}")
            print(f"registered: {', '.join(info['registered']) or 'nobody'}")
            print(f"holder: {info['holder'] or 'none'}" + (" (this node)" if info["held_here"] else ""))
            print(f"mounted here: {'yes' if info['mounted_here'] else 'no'}")
    elif command == "login":
        print(json.dumps(locked(do_login, conf)))
    elif command == "map":
        want = int(option(args, "--paths", "1"))
        timeout = int(option(args, "--timeout", "60"))
        print(json.dumps(locked(do_map, conf, want, timeout, flag(args, "--reconfigure"))))
    elif command == "mkfs":
        fstype = option(args, "--fstype", "ext4")
        label = option(args, "--label", "bluemind_ha")
        confirm = option(args, "--confirm", "")
        check = flag(args, "--check")
        if fstype not in ("ext4", "xfs"):
            raise SanError(USAGE, f"--fstype {fstype}: ext4 or xfs")
        print(json.dumps(locked(do_mkfs, conf, fstype, label, confirm, check, args)))
    return OK


def main(argv):
    parsed = nodelib.start(argv, "bluemind-ha-san", __doc__, COMMANDS, CONFIG)
    if isinstance(parsed, int):
        return parsed
    path, command, args = parsed
    try:
        if command == "config-test":
            if len(args) != 1:
                raise SanError(USAGE, "config-test needs one FILE")
            print(json.dumps(do_config_test(args[0])))
            return OK
        return dispatch(load(path), command, args)
    except SanError as exc:
        log(f"{command}: failed (exit {exc.code}): {exc}")
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
