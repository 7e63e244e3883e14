# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bluemind-ha-drbd - the replicated disk of a BlueMind HA pair (DRBD).

usage: bluemind-ha-drbd [--config FILE] COMMAND

Commands the failover controller and the operators use:
  promote   make this node Primary. Refused unless the local disk is UpToDate
            and the peer is not Primary (a peer that just died is seen as
            Primary until DRBD's ping times out: promote waits that long). When the peer cannot be reached, DRBD
            calls the fence-peer handler below before it lets the promotion
            happen, so a node never becomes Primary beside a live Primary.
  demote    make this node Secondary (refused while the device is in use)
  down      take the resource down (the node shuts down: ExecStop of
            bluemind-ha-drbd-up.service). A node demoted in the last
            handover_window seconds (its shutdown deactivated it) whose peer,
            connected and UpToDate, is Secondary first waits, at most
            handover_wait seconds, for the peer to become Primary: the peer's
            promotion then needs no fencing, and this node leaves as the
            Secondary of a Primary, a clean disconnection (its disk Outdated).
  status    role, disk and connection states of both nodes, sync progress;
            --json for a machine-readable form

Handlers DRBD calls (configured in the resource file):
  fence-peer   the peer is gone while this node may need to write. First ask
               the peer, over the public network (a path other than the
               replication link), to mark its disk Outdated. If it cannot be
               reached: in fencing mode stonith, power it off through its
               management controller (bluemind-ha-fence off, which makes the
               passive node wait so that in a partition the active node wins)
               and report it fenced only once its controller reports it off;
               in fencing mode outdate, report it unreachable (DRBD then
               assumes it is dead). A peer that answers without outdating its
               disk, or whose answer fails authentication, is never assumed
               dead: stonith powers it off, outdate fails. Until this handler
               succeeds, DRBD keeps I/O frozen: no write can reach one side
               only; a failure alerts (drbd_alert_command).
  split-brain  log the split brain at critical level and alert

Commands the role uses (JSON output with "changed"):
  probe --resource NAME --minor N --disk DEVICE
               the device's signatures, the resource's state and the device
               it has attached (needs no configuration file)
  wipe --resource NAME --minor N --disk DEVICE --confirm IDENTITY
               erase every signature (DRBD metadata included) on the backing
               device, once: IDENTITY must be the device's WWN or serial
               number as it reads now (the run's one-shot
               bluemind_ha_format_confirm; a /dev name is refused, it can
               move to another disk). Refused while the resource uses the
               device, while it is mounted or held, and on a device with
               neither WWN nor serial (erase such a disk by hand). Exit 7
               when IDENTITY does not name it, 6 when it is in use
  outdate-server  serve the peer's outdate requests on the public address
               (authenticated with the resource's shared secret)

Exit codes (promote, demote, status, wipe): 0 done, 1 failed, 2 usage or
configuration, 3 local disk not UpToDate, 4 the peer is Primary, 6 busy (the
device is open), 7 the confirmation does not name the device (wipe). fence-peer exits with DRBD's handler codes: 3 peer
Inconsistent, 4 peer Outdated, 5 peer unreachable (outdate mode only), 6 peer is
Primary, 7 peer powered off, 1 fencing failed (I/O stays frozen).

Every action goes to the journal (identifier bluemind-ha-drbd) with its duration.
"""
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import socketserver
import sys
import syslog
import time

import bluemind_ha_node as nodelib

CONFIG = "/etc/bluemind-ha/drbd.json"
OK, FAILED, USAGE, NOT_UPTODATE, PEER_PRIMARY, BUSY, NOT_CONFIRMED = 0, 1, 2, 3, 4, 6, 7
FP_INCONSISTENT, FP_OUTDATED, FP_UNREACHABLE, FP_PRIMARY, FP_FENCED = 3, 4, 5, 6, 7
CLOCK_SKEW = 30
CONNECTED = ("Connected", "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "WFBitMapS", "WFBitMapT",
             "WFSyncUUID", "StartingSyncS", "StartingSyncT", "VerifyS", "VerifyT")
COMMANDS = ("promote", "demote", "down", "status", "fence-peer", "split-brain", "probe", "wipe", "outdate-server")


class DrbdError(nodelib.NodeError):
    """A failure of bluemind-ha-drbd, with its exit code."""


# To the journal (identifier bluemind-ha-drbd) and to the caller's stderr.
log = nodelib.log


def run(argv, check=True, timeout=120):
    return nodelib.run(argv, timeout, check, error=DrbdError, words=4, tail=300)


# ---------------------------------------------------------------- state

parse_proc_drbd = nodelib.parse_proc_drbd


def resource_state(conf):
    state = nodelib.read_proc_drbd(conf["minor"])
    if state is None:
        return {"loaded": False}
    state["loaded"] = True
    state["up"] = bool(state.get("connection")) and state.get("connection") != "Unconfigured"
    return state


def device_open(conf):
    """Whether the DRBD device is held open (mounted or used) on this node."""
    path = f"/sys/block/drbd{conf['minor']}/holders"
    mounted = False
    try:
        mounted = nodelib.device_mounted(conf["device"])
    except OSError:
        pass
    return mounted or (os.path.isdir(path) and bool(os.listdir(path)))


# ---------------------------------------------------------------- controller commands

def do_promote(conf):
    start = time.monotonic()
    state = resource_state(conf)
    if not state.get("up"):
        raise DrbdError(FAILED, f"resource {conf['resource']} is not up on this node (drbdadm up {conf['resource']})")
    if state["role"] == "Primary":
        return False
    if state["disk"] != "UpToDate":
        raise DrbdError(NOT_UPTODATE, f"refusing to promote: the local disk is {state['disk']}, not UpToDate "
                                      "(the peer may hold newer data; see docs/drbd.md, split brain)")
    # A peer that just died still shows as Primary until DRBD's ping times out
    # (ping-int + ping-timeout): wait that long, bounded, before refusing.
    deadline = time.monotonic() + conf["peer_wait"]
    while state.get("peer_role") == "Primary" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = resource_state(conf)
    if state.get("peer_role") == "Primary":
        raise DrbdError(PEER_PRIMARY, f"refusing to promote: {conf['peer']} is Primary")
    if state.get("disk") != "UpToDate":
        raise DrbdError(NOT_UPTODATE, f"refusing to promote: the local disk is {state.get('disk')}, not UpToDate")
    # When the peer is unreachable, DRBD runs the fence-peer handler first;
    # fencing may include the passive delay and a power-off.
    proc = run(["drbdadm", "primary", conf["resource"]], check=False, timeout=conf["promote_timeout"])
    after = resource_state(conf)
    if after.get("role") != "Primary":
        raise DrbdError(FAILED, f"promotion failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    log(f"promote: {conf['node']} is Primary of {conf['resource']} in {time.monotonic() - start:.2f} s "
        f"(peer {after.get('peer_role')}, peer disk {after.get('peer_disk')})")
    return True


def do_demote(conf):
    state = resource_state(conf)
    if not state.get("up") or state["role"] != "Primary":
        return False
    if device_open(conf):
        raise DrbdError(BUSY, f"{conf['device']} is in use on this node: unmount it first")
    start = time.monotonic()
    run(["drbdadm", "secondary", conf["resource"]])
    log(f"demote: {conf['node']} is Secondary of {conf['resource']} in {time.monotonic() - start:.2f} s")
    try:
        os.makedirs(os.path.dirname(conf["demote_stamp"]), exist_ok=True)
        with open(conf["demote_stamp"], "w", encoding="utf-8") as handle:
            handle.write(f"{time.time()}\n")
    except OSError as exc:
        log(f"demote: cannot record the demotion in {conf['demote_stamp']}: {exc}", syslog.LOG_WARNING)
    return True


def demoted_recently(conf, now):
    try:
        with open(conf["demote_stamp"], encoding="utf-8") as handle:
            return 0 <= now - float(handle.read().strip()) < conf["handover_window"]
    except (OSError, ValueError):
        return False


def handing_over(state):
    """This node Secondary, connected to a Secondary peer whose disk is UpToDate:
    the peer can become Primary without fencing while the connection lasts."""
    return (state.get("connection") in CONNECTED and state.get("role") == "Secondary"
            and state.get("peer_role") == "Secondary" and state.get("peer_disk") == "UpToDate")


def do_down(conf, clock=time.time, sleep=time.sleep):
    """Take the resource down as the node shuts down. Taken down at once after
    its shutdown demoted it, an active node left two Secondaries: the peer's
    promotion, moments later, found the peer disk DUnknown, called fence-peer and
    powered this node off in the middle of its reboot. So a node demoted moments
    ago waits (bounded) for its connected peer to become Primary first."""
    state = resource_state(conf)
    if not state.get("up"):
        return False
    if demoted_recently(conf, clock()) and handing_over(state):
        log(f"down: waiting up to {conf['handover_wait']} s for {conf['peer']} to become Primary before "
            "disconnecting")
        deadline = clock() + conf["handover_wait"]
        while handing_over(state) and clock() < deadline:
            sleep(0.5)
            state = resource_state(conf)
        if state.get("peer_role") == "Primary":
            log(f"down: {conf['peer']} is Primary; disconnecting cleanly")
        else:
            log(f"down: {conf['peer']} did not become Primary within {conf['handover_wait']} s "
                f"(connection {state.get('connection')}, peer {state.get('peer_role')}); disconnecting anyway",
                syslog.LOG_WARNING)
    start = time.monotonic()
    run(["drbdadm", "down", conf["resource"]])
    log(f"down: {conf['resource']} is down on {conf['node']} in {time.monotonic() - start:.2f} s")
    return True


# ---------------------------------------------------------------- outdate over the public network

def mac(secret, *parts):
    return hmac.new(secret.encode(), "|".join(str(p) for p in parts).encode(), hashlib.sha256).hexdigest()


def outdate_locally(conf):
    state = resource_state(conf)
    if state.get("role") == "Primary":
        return "primary"
    if state.get("disk") == "Inconsistent":
        return "inconsistent"
    if state.get("disk") == "Outdated":
        return "outdated"
    # The peer lost the replication link; this side may not have noticed yet
    # (ping timeout), and DRBD refuses to outdate a connected disk. Wait, bounded.
    deadline = time.monotonic() + conf["disconnect_wait"]
    while state.get("connection") in CONNECTED and time.monotonic() < deadline:
        time.sleep(0.5)
        state = resource_state(conf)
    proc = run(["drbdadm", "outdate", conf["resource"]], check=False)
    if resource_state(conf).get("disk") == "Outdated":
        return "outdated"
    return "error: " + (proc.stderr or proc.stdout).strip()[-200:]


def answer(conf, request, seen):
    """The outdate server's answer to one request line, or None to ignore it."""
    try:
        msg = json.loads(request)
        parts = (msg["resource"], msg["node"], msg["time"], msg["nonce"])
    except (ValueError, KeyError, TypeError):
        return None
    if msg["resource"] != conf["resource"] or msg["node"] != conf["peer"]:
        return None
    if abs(time.time() - float(msg["time"])) > CLOCK_SKEW or msg["nonce"] in seen:
        return None
    if not hmac.compare_digest(mac(conf["secret"], *parts), str(msg.get("mac", ""))):
        return None
    seen.add(msg["nonce"])
    result = outdate_locally(conf)
    log(f"outdate-server: {conf['peer']} asked this node to outdate {conf['resource']}: {result}")
    return json.dumps({"result": result, "nonce": msg["nonce"], "mac": mac(conf["secret"], result, msg["nonce"])})


def ask_peer_to_outdate(conf):
    """The peer's authenticated answer (outdated, inconsistent, primary, or
    "error: ..." when it could not outdate its disk); "unauthenticated" when
    something answered without the shared secret's MAC; "silent" when a connection
    was accepted but no answer came (the peer's service is alive: a clock too far
    apart, a request it ignored); "unreachable" only when no attempt connected."""
    connected = False
    nonce = secrets.token_hex(16)
    now = time.time()
    request = {"resource": conf["resource"], "node": conf["node"], "time": now, "nonce": nonce,
               "mac": mac(conf["secret"], conf["resource"], conf["node"], now, nonce)}
    for attempt in range(conf["outdate_attempts"]):
        try:
            with socket.create_connection((conf["peer_address"], conf["outdate_port"]),
                                          timeout=conf["outdate_timeout"]) as sock:
                connected = True
                # The peer may wait for its side of the link to drop before it can outdate.
                sock.settimeout(conf["disconnect_wait"] + 10)
                sock.sendall((json.dumps(request) + "\n").encode())
                reply = json.loads(sock.makefile().readline())
            if hmac.compare_digest(mac(conf["secret"], str(reply["result"]), nonce), str(reply.get("mac", ""))):
                return str(reply["result"])
            # Something answered on the peer's address: not proof that the peer
            # is dead.
            return "unauthenticated"
        except (OSError, ValueError, KeyError):
            if attempt + 1 < conf["outdate_attempts"]:
                time.sleep(1)
    return "silent" if connected else "unreachable"


class OutdateHandler(socketserver.StreamRequestHandler):
    def handle(self):
        if self.client_address[0] != self.server.conf["peer_address"]:
            return
        self.connection.settimeout(10)
        try:
            line = self.rfile.readline(4096).decode()
        except (OSError, UnicodeDecodeError):
            return
        reply = answer(self.server.conf, line, self.server.seen)
        if reply:
            self.wfile.write((reply + "\n").encode())


def serve(conf):
    socketserver.TCPServer.allow_reuse_address = True
    family = socket.AF_INET6 if ":" in conf["listen_address"] else socket.AF_INET

    class Server(socketserver.TCPServer):
        address_family = family

    with Server((conf["listen_address"], conf["outdate_port"]), OutdateHandler) as server:
        server.conf = conf
        server.seen = set()
        log(f"outdate-server: listening on {conf['listen_address']}:{conf['outdate_port']} for {conf['peer']}")
        server.serve_forever()


# ---------------------------------------------------------------- handlers

def fence_peer(conf):
    start = time.monotonic()
    peer = conf["peer"]
    log(f"fence-peer: lost {peer} on the replication link; asking it to outdate over "
        f"{conf['peer_address']}:{conf['outdate_port']}", syslog.LOG_WARNING)
    result = ask_peer_to_outdate(conf)
    took = time.monotonic() - start
    if result == "outdated":
        log(f"fence-peer: {peer} marked its disk Outdated ({took:.1f} s)")
        return FP_OUTDATED
    if result == "inconsistent":
        log(f"fence-peer: {peer}'s disk is Inconsistent ({took:.1f} s)")
        return FP_INCONSISTENT
    if result == "primary":
        log(f"fence-peer: {peer} is Primary: this node must not write ({took:.1f} s)", syslog.LOG_CRIT)
        return FP_PRIMARY
    if result != "unreachable":
        # The peer answered without outdating its disk ("error: ...", an unknown
        # answer), accepted the connection and said nothing, or the answer failed
        # authentication: the peer may be alive and able to write. Never assumed dead; power-off is the only way on.
        log(f"fence-peer: {peer} answered but did not outdate its disk: {result}", syslog.LOG_ERR)
        if conf["fencing"] == "outdate":
            log(f"fence-peer: fencing mode outdate has no power-off; I/O stays frozen until the operator acts, "
                f"see docs/drbd.md ({took:.1f} s)", syslog.LOG_CRIT)
            alert(conf, "fencing-failed")
            return FAILED
    elif conf["fencing"] == "outdate":
        log(f"fence-peer: {peer} is unreachable on every path; fencing mode outdate assumes it is dead "
            f"({took:.1f} s)", syslog.LOG_WARNING)
        return FP_UNREACHABLE
    log(f"fence-peer: {peer} is unreachable over the public network; powering it off", syslog.LOG_WARNING)
    proc = run([conf["fence_command"], "off"], check=False, timeout=conf["fence_timeout"])
    took = time.monotonic() - start
    if proc.returncode == 0:
        log(f"fence-peer: {peer} is powered off ({took:.1f} s)")
        return FP_FENCED
    log(f"fence-peer: could not fence {peer} (bluemind-ha-fence exit {proc.returncode}); I/O stays frozen "
        f"until the operator acts, see docs/drbd.md ({took:.1f} s)", syslog.LOG_CRIT)
    alert(conf, "fencing-failed")
    return FAILED


def alert(conf, event):
    """drbd_alert_command, when set, with the arguments alert EVENT RESOURCE NODE."""
    if conf.get("alert_command"):
        run(["/bin/sh", "-c", conf["alert_command"], "alert", event, conf["resource"], conf["node"]],
            check=False, timeout=60)


def split_brain(conf):
    log(f"split-brain: DRBD detected a split brain on {conf['resource']} between {conf['node']} and "
        f"{conf['peer']}; the resource stays disconnected. Recovery: docs/drbd.md", syslog.LOG_CRIT)
    alert(conf, "split-brain")
    return OK


# ---------------------------------------------------------------- role support

def signatures(device):
    # probe's output has always named type and label only.
    return [{"type": sig["type"], "label": sig["label"]}
            for sig in nodelib.signatures(device, lambda argv: run(argv, check=False))]


def attached_disk(resource):
    """Real path of the backing device the running resource uses, or None."""
    proc = run(["drbdsetup", "show", resource], check=False)
    match = re.search(r'^\s*disk\s+"([^"]+)";', proc.stdout, re.M) if proc.returncode == 0 else None
    return os.path.realpath(match.group(1)) if match else None


def probe(resource, minor, disk):
    """What the role must know before it changes anything: the signatures on the
    backing device it is given, the resource's state, the device attached now."""
    found = signatures(disk)
    state = resource_state({"minor": minor})
    return {"changed": False, "disk": disk, "disk_path": os.path.realpath(disk), "signatures": found,
            "metadata": any(s["type"] in ("drbd", "drbd_meta") for s in found),
            "foreign": [s for s in found if s["type"] not in ("drbd", "drbd_meta")],
            "identity": nodelib.device_identity(disk, lambda argv: run(argv, check=False)),
            "state": state, "attached": attached_disk(resource) if state.get("up") else None}


def disk_held(path):
    """Whether the device (a real path) is mounted or has holders (a partition
    in use, device-mapper, md) on this node."""
    holders = f"/sys/class/block/{os.path.basename(path)}/holders"
    try:
        mounted = nodelib.device_mounted(path)
    except OSError:
        mounted = False
    return mounted or (os.path.isdir(holders) and bool(os.listdir(holders)))


def wipe(resource, minor, disk, confirm):
    """Erase every signature on the backing device, under the one-shot
    confirmation that names it (docs/drbd.md, "Erasing a disk")."""
    found = probe(resource, minor, disk)
    if not found["signatures"]:
        return {"changed": False, "wiped": []}
    names = found["identity"]["names"]
    what = ", ".join(s["type"] + (f" labelled {s['label']}" if s.get("label") else "") for s in found["signatures"])
    if not names:
        raise DrbdError(NOT_CONFIRMED, f"{disk} ({found['disk_path']}) carries {what} and reports neither a WWN "
                                       "nor a serial number, so no confirmation can name it: check by hand that it "
                                       f"is the disk to erase, then run wipefs -a {found['disk_path']}")
    if not nodelib.confirms(confirm, names):
        raise DrbdError(NOT_CONFIRMED, f"{disk} ({found['disk_path']}) carries {what}; erasing it needs "
                                       f"bluemind_ha_format_confirm={names[0]} (its "
                                       f"{'WWN' if found['identity']['wwn'] else 'serial number'}) for this run "
                                       f"only, not {confirm or 'nothing'}")
    if found["attached"] == found["disk_path"]:
        raise DrbdError(BUSY, f"the running resource {resource} uses {found['disk_path']}: take it down first")
    if disk_held(found["disk_path"]):
        raise DrbdError(BUSY, f"{found['disk_path']} is mounted or held on this node")
    start = time.monotonic()
    # --force: only past the checks above (not mounted, not held); wipefs needs it
    # to erase a partition table.
    run(["wipefs", "--all", "--force", found["disk_path"]])
    log(f"wipe: {what} erased on {found['disk_path']} ({names[0]}) in {time.monotonic() - start:.1f} s")
    return {"changed": True, "wiped": [s["type"] for s in found["signatures"]]}


def probe_args(args, command="probe"):
    values = dict(zip(args[::2], args[1::2]))
    want = {"--resource", "--minor", "--disk"} | ({"--confirm"} if command == "wipe" else set())
    if len(args) % 2 or set(values) != want or not values["--minor"].isdigit():
        raise DrbdError(USAGE, f"usage: bluemind-ha-drbd {command} --resource NAME --minor N --disk DEVICE"
                               + (" --confirm IDENTITY" if command == "wipe" else ""))
    return (values["--resource"], int(values["--minor"]), values["--disk"]) + (
        (values["--confirm"],) if command == "wipe" else ())


# Every key is rendered by the role from its defaults: a missing one is an error.
REQUIRED = ("node", "peer", "resource", "minor", "device", "disk", "secret", "peer_address", "listen_address",
            "fencing", "fence_command", "fence_timeout", "promote_timeout", "outdate_port", "outdate_timeout",
            "outdate_attempts", "disconnect_wait", "peer_wait", "handover_wait", "handover_window", "demote_stamp",
            "alert_command")


def load(path):
    return nodelib.load(path, REQUIRED, DrbdError)


def standard_streams():
    """DRBD starts its handlers from the kernel with no standard file descriptors:
    give them /dev/null, so that output cannot fail and no socket becomes fd 0-2."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # pylint: disable=consider-using-with
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # pylint: disable=consider-using-with


def main(argv):
    standard_streams()
    parsed = nodelib.start(argv, "bluemind-ha-drbd", __doc__, COMMANDS, CONFIG)
    if isinstance(parsed, int):
        return parsed
    path, command, args = parsed
    try:
        if command == "probe":  # before the role has written the configuration
            print(json.dumps(probe(*probe_args(args))))
            return OK
        if command == "wipe":
            print(json.dumps(wipe(*probe_args(args, "wipe"))))
            return OK
        conf = load(path)
        if command == "fence-peer":
            return fence_peer(conf)
        if command == "split-brain":
            return split_brain(conf)
        if command == "outdate-server":
            serve(conf)
            return OK
        if command == "promote":
            print(json.dumps({"changed": do_promote(conf)}))
        elif command == "demote":
            print(json.dumps({"changed": do_demote(conf)}))
        elif command == "down":
            print(json.dumps({"changed": do_down(conf)}))
        elif command == "status":
            state = resource_state(conf)
            state.update({"node": conf["node"], "peer": conf["peer"], "resource": conf["resource"],
                          "in_use": device_open(conf)})
            if "--json" in args:
                print(json.dumps(state, indent=2))
            else:
                print(f"{conf['resource']} on {conf['node']}: {state.get('role', '?')} ({state.get('disk', '?')}), "
                      f"peer {conf['peer']}: {state.get('peer_role', '?')} ({state.get('peer_disk', '?')}), "
                      f"connection {state.get('connection', 'down')}"
                      + (f", sync {state['sync_percent']}%" if "sync_percent" in state else ""))
        return OK
    except DrbdError as exc:
        log(f"{command}: failed (exit {exc.code}): {exc}", syslog.LOG_ERR)
        return FAILED if command == "fence-peer" else exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
