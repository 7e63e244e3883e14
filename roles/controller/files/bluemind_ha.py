# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bluemind-ha - the failover controller of a BlueMind HA pair, on each node.

usage: bluemind-ha [--config FILE] COMMAND [ARGS]

  activate [--reason TEXT]    take the active role: claim the storage (DRBD
                              promotion or SAN reservation, which fence the peer
                              when its state is unknown), mount it, expose the
                              BlueMind paths, start the services in the vendor's
                              order, wait (bounded) until BlueMind answers
                              CORE_STATE_RUNNING
  deactivate [--reason TEXT]  the reverse; a filesystem that will not unmount is
                              freed by stopping its holders, and as a last resort
                              the node reboots: a node never keeps the storage
  health                      exit 0 when this node is fine in its role: active,
                              BlueMind answers; passive, it could take over; an
                              activation in progress counts as fine
  health --watch FILE [--interval S] [--fall N] [--rise N] [--timeout S]
                              the health verdict keepalived reads (its track_file,
                              no process started per check): a long-running
                              watcher (bluemind-ha-health.service) checks every S
                              seconds and writes 1 (healthy) or 0 (failing) to
                              FILE once N checks in a row failed (or passed); each
                              check also writes FILE.json (verdict, why, time) for
                              status; it pings systemd's watchdog after each check
  notify STATE                keepalived's entry point: MASTER starts the activate
                              unit, BACKUP, FAULT and STOP the deactivate unit; a
                              FAULT during an activation does not stop it (the
                              activation finishes on its own bounds, then hands
                              over if the node is no longer master)
  status [--json]             role, VRRP state, storage, mounts, services,
                              BlueMind's state, the last transitions, the peer as
                              the storage sees it
  status --nagios             the same as a Nagios/Icinga plugin: one line with
                              perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
  status --prometheus [--output FILE]
                              the same as Prometheus metrics (bluemind_ha_*), for
                              node_exporter's textfile collector; FILE is written
                              atomically (the bluemind-ha-metrics timer does it)
  drain [--reason TEXT]       the health check fails here until undrain: an active
                              node hands over to its peer, a passive one cannot
                              take over (the planned switchover uses it)
  undrain                     end a drain
  suspend [--reason TEXT]     suspend automatic failover (upgrades): the active
                              node's check passes whatever BlueMind answers, a
                              passive node's check fails so it cannot take over
  resume                      end a suspension
  mark-releasing              the node's shutdown has begun (the stop of
                              bluemind-ha-shutdown-begin.service, before any
                              BlueMind unit stops): on an active node, the
                              health check passes while VRRP master until the
                              shutdown's deactivation has released the storage
  retry                       finish a SAN release that a deactivation could not
                              do (the LUN had no usable path yet): run by the
                              bluemind-ha-retry timer while /run/bluemind-ha/
                              release-pending exists; nothing while the node is,
                              or is becoming, active, or while a transition runs

Drains and suspensions live in /run/bluemind-ha: a reboot ends them. So does a
pending release: at boot the storage's own unit registers the node again.

activate and deactivate are idempotent and serialised by a lock; every step is
bounded, and logged to the journal (identifier bluemind-ha) with its duration.
Each transition is recorded in /var/lib/bluemind-ha/transitions.jsonl and, when
configured, sent to the administrators by email (through a relay, never the local
BlueMind mail service) and to a webhook. An alert that fails never blocks.

Exit codes: 0 done, 1 failed, 2 usage or configuration, 3 busy (lock timeout),
4 the storage could not be claimed or released.
"""
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import syslog
import time
import urllib.parse

import bluemind_ha_node as nodelib

# smtplib, email and urllib.request are imported where an alert is sent: the
# health check (keepalived runs it every few seconds) stays light.

CONFIG = "/etc/bluemind-ha/controller.json"
RUN = "/run/bluemind-ha"
# Written by keepalived's unprivileged check (the role makes it its own).
HEALTH_DIR = "/run/bluemind-ha/health"
# The health watcher's verdict, which keepalived tracks (role keepalived).
VERDICT = "/run/bluemind-ha/health/verdict"
HISTORY = "/var/lib/bluemind-ha/transitions.jsonl"
OK, FAILED, USAGE, BUSY, STORAGE = 0, 1, 2, 3, 4
READY_STATES = ("CORE_STATE_RUNNING",)
COMMANDS = ("activate", "deactivate", "health", "notify", "status", "drain", "undrain", "suspend", "resume",
            "retry", "mark-releasing")
# Written when a deactivation's release fails; the retry timer runs while it exists.
PENDING = "release-pending"
# bluemind-ha-san: the LUN's map is missing or has no usable path.
SAN_NO_DEVICE = 3


class HaError(nodelib.NodeError):
    """A failure of the controller, with its exit code."""


class Interrupted(Exception):
    """SIGTERM: systemd stops this transition (the opposite one was asked for)."""


class NotYet(Exception):
    """A pending release cannot succeed yet (the SAN map has no usable path): not a failure."""


# To the journal (identifier bluemind-ha) and to an operator's terminal.
log = nodelib.log


def run(argv, timeout, check=True):
    return nodelib.run(argv, timeout, check, error=HaError)


# ---------------------------------------------------------------- configuration

# Every key is rendered by the role from its defaults: a missing one is an error.
REQUIRED = ("node", "peer", "storage", "device", "mountpoint", "fstype", "mount_options", "paths", "units_before",
            "target", "units_after", "state_url", "checks", "storage_grace", "claim_timeout", "step_timeout",
            "start_timeout", "stop_timeout", "lock_timeout", "unmount_attempts", "reboot_if_stuck", "alert_file",
            "history_size")


def load(path):
    conf = nodelib.load(path, REQUIRED, HaError)
    if conf["storage"] not in ("drbd", "san"):
        raise HaError(USAGE, f"{path}: storage must be drbd or san, not {conf['storage']}")
    return conf


def storage_command(conf, action):
    """The storage role's command for claim, release and status."""
    if conf["storage"] == "drbd":
        return {"claim": ["bluemind-ha-drbd", "promote"], "release": ["bluemind-ha-drbd", "demote"],
                "status": ["bluemind-ha-drbd", "status", "--json"]}[action]
    return {"claim": ["bluemind-ha-san", "claim"], "release": ["bluemind-ha-san", "release"],
            "status": ["bluemind-ha-san", "status", "--json"]}[action]


def data_path(conf, path):
    """Where a BlueMind path lives on the HA filesystem."""
    return os.path.join(conf["mountpoint"], "data", path.lstrip("/"))


# ---------------------------------------------------------------- mounts

def mounts(mountinfo=nodelib.MOUNTINFO):
    """Mount points of this namespace, in mount order: [(target, root, source)]."""
    return [(m["target"], m["root"], m["source"]) for m in nodelib.read_mountinfo(mountinfo)]


def is_mountpoint(path, table):
    return any(target == path for target, _root, _source in table)


def our_mounts(conf, table):
    """The controller's mounts in mount order: the HA filesystem, anything below
    it, and the BlueMind paths bound from it."""
    top = conf["mountpoint"].rstrip("/")
    return [target for target, _root, _source in table
            if target == top or target.startswith(top + "/") or target in conf["paths"]]


# ---------------------------------------------------------------- state files

# RUN is read at each call: the tests point it elsewhere.
def write_marker(name, content):
    nodelib.write_marker(RUN, name, content)


def read_marker(name):
    return nodelib.read_marker(RUN, name)


def remove_marker(name):
    nodelib.remove_marker(RUN, name)


def vrrp_state():
    return vrrp_state_since()[0]


def vrrp_state_since():
    """keepalived's state as the notify hook recorded it, and since when (epoch;
    0 when unknown)."""
    try:
        with open(os.path.join(RUN, "vrrp-state"), encoding="utf-8") as handle:
            fields = handle.read().split()
    except OSError:
        return "UNKNOWN", 0.0
    if not fields:
        return "UNKNOWN", 0.0
    try:
        return fields[0], float(fields[1])
    except (IndexError, ValueError):
        return fields[0], 0.0


def record(conf, entry):
    os.makedirs(os.path.dirname(HISTORY), mode=0o755, exist_ok=True)
    with open(HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    with contextlib.suppress(OSError):
        with open(HISTORY, encoding="utf-8") as handle:
            lines = handle.readlines()
        if len(lines) > 2 * conf["history_size"]:
            tmp = HISTORY + ".new"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(lines[-conf["history_size"]:])
            os.replace(tmp, HISTORY)


def history(limit):
    try:
        with open(HISTORY, encoding="utf-8") as handle:
            lines = handle.readlines()[-limit:]
    except OSError:
        return []
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


# ---------------------------------------------------------------- BlueMind

def http_get(url, timeout):
    """Body of a plain-HTTP GET answered 200, else None. A socket, not urllib:
    urllib's imports cost seconds on a loaded node, and keepalived's check has a
    timeout."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"state_url must be a plain http:// URL on this node, not {url}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return None
    return body


def bluemind_state(conf, timeout=5):
    """BlueMind's installation state (a JSON string), or None when it does not answer."""
    try:
        body = http_get(conf["state_url"], timeout)
        value = json.loads(body.decode() or "null") if body is not None else None
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None


def unit_exists(unit):
    proc = subprocess.run(["systemctl", "show", "-p", "LoadState", "--value", unit],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() not in ("", "not-found")


def units_in_order(conf):
    return [u for u in conf["units_before"] + [conf["target"]] + conf["units_after"] if unit_exists(u)]


UNITS_TIMEOUT = 10
# Seconds a new VRRP master may be without an activation marker (the notify
# hook's Python start) before its check fails.
MASTER_GRACE = 10.0
# The health watcher asks systemd for the units at most this often: a systemctl
# call costs about 0.3 s of CPU on a busy emulated node, BlueMind's own state
# (one local HTTP request, about 0.01 s) is read at every check.
UNITS_EVERY = 5.0
_UNITS_SEEN = {"at": None, "down": []}


def units_down_cached(conf, max_age):
    """units_down, or its answer of less than max_age seconds ago."""
    now = time.monotonic()
    if _UNITS_SEEN["at"] is None or now - _UNITS_SEEN["at"] >= max_age:
        _UNITS_SEEN.update(at=now, down=units_down(conf))
    return _UNITS_SEEN["down"]


def units_down(conf):
    """The installed units of BlueMind's start order that are not running (one
    systemctl call)."""
    units = conf["units_before"] + [conf["target"]] + conf["units_after"]
    try:
        proc = subprocess.run(["systemctl", "show", "-p", "Id", "-p", "LoadState", "-p", "ActiveState", "--", *units],
                              capture_output=True, text=True, check=False, timeout=UNITS_TIMEOUT)
    except subprocess.TimeoutExpired:
        return [f"systemd did not say within {UNITS_TIMEOUT} s"]
    down = []
    for block in proc.stdout.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("LoadState") == "loaded" and fields.get("ActiveState") in ("inactive", "failed", "deactivating"):
            down.append(f"{fields.get('Id')} {fields['ActiveState']}")
    return down


# ---------------------------------------------------------------- alerts

def alert_settings(conf):
    """Relay and webhook settings, with their secrets: a root-only file apart from
    the configuration, which keepalived's unprivileged check must read."""
    try:
        with open(conf["alert_file"], encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"alert: cannot read {conf['alert_file']}: {exc}", syslog.LOG_WARNING)
        return {}


def tls_context(settings):
    """Certificates verified against the system's CAs, or the site's CA file."""
    import ssl  # pylint: disable=import-outside-toplevel
    return ssl.create_default_context(cafile=settings.get("ca_file") or None)


def alert_webhook(settings, event, summary):
    """POST the event. The token only over https, and never to where a redirect
    points: a 3xx answer is not followed (urllib would re-send the header)."""
    import urllib.error  # pylint: disable=import-outside-toplevel
    import urllib.request  # pylint: disable=import-outside-toplevel

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)

    webhook = settings["webhook_url"]
    https = webhook.lower().startswith("https://")
    headers = {"Content-Type": "application/json"}
    if settings.get("webhook_token"):
        if not https:
            log(f"alert: webhook {webhook} is not https: sent without its token", syslog.LOG_WARNING)
        else:
            headers["Authorization"] = f"Bearer {settings['webhook_token']}"
    handlers = [NoRedirect()]
    if https:
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(settings)))
    try:
        body = json.dumps(dict(event, summary=summary)).encode()
        request = urllib.request.Request(webhook, data=body, headers=headers, method="POST")
        with urllib.request.build_opener(*handlers).open(request, timeout=settings.get("timeout", 5)):
            pass
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log(f"alert: webhook {webhook} failed: {exc}", syslog.LOG_WARNING)


def alert_email(settings, event, summary):
    """Through the relay; STARTTLS verifies the relay's certificate, and the relay
    password is never sent on a connection without TLS."""
    import smtplib  # pylint: disable=import-outside-toplevel
    from email.message import EmailMessage  # pylint: disable=import-outside-toplevel
    relay = settings["smtp_host"]
    if settings.get("smtp_username") and not settings.get("smtp_starttls"):
        # Validation refuses this inventory; a hand-edited file gets no connection.
        log(f"alert: email through {relay} not sent: the relay login needs smtp_starttls"
            " (the password is never sent in clear)", syslog.LOG_WARNING)
        return
    try:
        message = EmailMessage()
        message["Subject"] = summary
        message["From"] = settings.get("email_from", f"bluemind-ha@{event['node']}")
        message["To"] = ", ".join(settings["email_to"])
        message.set_content(json.dumps(event, indent=2))
        with smtplib.SMTP(relay, settings.get("smtp_port", 25), timeout=settings.get("timeout", 10)) as smtp:
            if settings.get("smtp_starttls"):
                smtp.starttls(context=tls_context(settings))
            if settings.get("smtp_username"):
                smtp.login(settings["smtp_username"], settings.get("smtp_password", ""))
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log(f"alert: email through {relay} failed: {exc}", syslog.LOG_WARNING)


def alert(conf, event):
    """Journal always; email and webhook when configured. Never raises."""
    settings = alert_settings(conf)
    summary = (f"BlueMind HA {event['node']}: {event['transition']} {event['outcome']} in {event['seconds']} s"
               + (f" ({event['error']})" if event.get("error") else ""))
    log(f"alert: {summary}", syslog.LOG_CRIT if event["outcome"] != "ok" else syslog.LOG_NOTICE)
    if settings.get("webhook_url"):
        alert_webhook(settings, event, summary)
    if settings.get("smtp_host") and settings.get("email_to"):
        alert_email(settings, event, summary)


# ---------------------------------------------------------------- transitions

class Transition:
    """One activation or deactivation: lock, steps with durations, record, alert."""

    def __init__(self, conf, name, reason):
        self.conf, self.name, self.reason = conf, name, reason
        self.steps = []
        self.start = time.monotonic()
        self.started = time.time()
        self.lock = None

    def acquire(self, wait=True):
        """The controller's lock; without wait, False at once when a transition holds it."""
        os.makedirs(RUN, mode=0o755, exist_ok=True)
        self.lock = open(os.path.join(RUN, "controller.lock"), "a+", encoding="utf-8")  # pylint: disable=consider-using-with
        deadline = time.monotonic() + self.conf["lock_timeout"]
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError as exc:
                if not wait:
                    return False
                if time.monotonic() > deadline:
                    raise HaError(BUSY, f"another transition holds {RUN}/controller.lock "
                                        f"for more than {self.conf['lock_timeout']} s") from exc
                time.sleep(0.5)

    def step(self, name, func, *args):
        start = time.monotonic()
        try:
            changed = func(*args)
        except (HaError, Interrupted) as exc:
            took = round(time.monotonic() - start, 2)
            self.steps.append({"step": name, "seconds": took, "outcome": "failed"})
            log(f"{self.name}: step={name} outcome=failed seconds={took}: {exc}", syslog.LOG_ERR)
            raise
        took = round(time.monotonic() - start, 2)
        self.steps.append({"step": name, "seconds": took, "outcome": "changed" if changed else "unchanged"})
        log(f"{self.name}: step={name} outcome={'changed' if changed else 'unchanged'} seconds={took}")
        return changed

    def finish(self, outcome, error=None):
        event = {"node": self.conf["node"], "transition": self.name, "reason": self.reason, "outcome": outcome,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.monotonic() - self.start, 2),
                 # Epoch seconds, for measuring across the two nodes (switchover, benchmark).
                 "started": round(self.started, 3), "ended": round(time.time(), 3),
                 "steps": self.steps, "vrrp": vrrp_state()}
        if error:
            event["error"] = str(error)
        changed = any(s["outcome"] == "changed" for s in self.steps)
        if changed or outcome != "ok":
            record(self.conf, event)
            alert(self.conf, event)
        log(f"{self.name}: outcome={outcome} seconds={event['seconds']} reason={self.reason}",
            syslog.LOG_NOTICE if outcome == "ok" else syslog.LOG_ERR)
        return event


PEER_HOLDS = 4  # bluemind-ha-drbd promote: the peer is still Primary


def claim(conf):
    """Claim the storage. A DRBD peer that is still Primary is usually handing
    over (its deactivation stops BlueMind first, which can take minutes): retry
    until claim_timeout."""
    deadline = time.monotonic() + conf["claim_timeout"]
    while True:
        proc = run(storage_command(conf, "claim"), conf["claim_timeout"], check=False)
        if proc.returncode != PEER_HOLDS or conf["storage"] != "drbd" or time.monotonic() > deadline:
            break
        log(f"activate: {conf['peer']} still holds the storage; waiting for it to hand over", syslog.LOG_WARNING)
        time.sleep(5)
    return storage_changed(conf, "claim", proc)


def release(conf):
    return storage_changed(conf, "release", run(storage_command(conf, "release"), conf["step_timeout"], check=False))


def storage_changed(conf, action, proc):
    """Whether the storage command's claim or release changed anything (its JSON
    says; changed when it does not), or a STORAGE error with its output."""
    if proc.returncode != 0:
        raise HaError(STORAGE, f"{' '.join(storage_command(conf, action))} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    with contextlib.suppress(ValueError):
        return bool(json.loads(proc.stdout or "{}").get("changed", True))
    return True


def mount_storage(conf):
    if is_mountpoint(conf["mountpoint"], mounts()):
        return False
    os.makedirs(conf["mountpoint"], mode=0o755, exist_ok=True)
    run(["mount", "-t", conf["fstype"], "-o", conf["mount_options"], conf["device"], conf["mountpoint"]],
        conf["step_timeout"])
    return True


def expose(conf):
    """Bind each BlueMind path from the HA filesystem onto its usual place. A path
    the HA filesystem does not hold yet is migrated there first, from this node's
    copy; a path it holds is never overwritten."""
    changed = False
    table = mounts()
    for path in conf["paths"]:
        source = data_path(conf, path)
        if not os.path.lexists(source):
            os.makedirs(os.path.dirname(source), mode=0o755, exist_ok=True)
            staging = source + ".migrating"
            if os.path.isdir(staging) or os.path.lexists(staging):
                run(["rm", "-rf", "--one-file-system", staging], conf["step_timeout"])
            if os.path.lexists(path):
                run(["cp", "-a", "--", path, staging], conf["step_timeout"] * 10)
                log(f"activate: migrated {path} to the HA filesystem ({source})")
            else:
                os.makedirs(staging, mode=0o755)
            os.replace(staging, source)
            changed = True
        if is_mountpoint(path, table):
            continue
        if not os.path.lexists(path):
            if os.path.isdir(source):
                os.makedirs(path, mode=0o755)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                with open(path, "a", encoding="utf-8"):
                    pass
        run(["mount", "--bind", source, path], conf["step_timeout"])
        changed = True
    return changed


def mark_active(conf):
    installed = os.path.exists(os.path.join(conf["mountpoint"], ".bluemind-ha", "installed"))
    current = read_marker("active")
    write_marker("active", {"node": conf["node"], "since": (current or {}).get("since", time.time()),
                            "installed": installed})
    return current is None


def start_units(conf):
    changed = False
    for unit in units_in_order(conf):
        active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0
        if not active:
            run(["systemctl", "start", unit], conf["start_timeout"])
            changed = True
    return changed


def wait_ready(conf):
    """CORE_STATE_RUNNING, polled; a BlueMind never set up may answer
    CORE_STATE_NOT_INSTALLED (the post-install step then sets it up)."""
    flag = os.path.join(conf["mountpoint"], ".bluemind-ha", "installed")
    deadline = time.monotonic() + conf["start_timeout"]
    seen = None
    while True:
        seen = bluemind_state(conf)
        down = units_down(conf) if seen in READY_STATES else []
        failed = [d for d in down if d.endswith(" failed")]
        if failed or (down and time.monotonic() > deadline):
            raise HaError(FAILED, f"BlueMind answers {seen} but {', '.join(down)}")
        if seen in READY_STATES and not down:
            if not os.path.exists(flag):
                os.makedirs(os.path.dirname(flag), mode=0o755, exist_ok=True)
                with open(flag, "w", encoding="utf-8") as handle:
                    handle.write(f"{time.time()} {conf['node']}\n")
                mark = read_marker("active") or {}
                write_marker("active", dict(mark, installed=True))
            return False
        if seen == "CORE_STATE_NOT_INSTALLED" and not os.path.exists(flag):
            log("activate: BlueMind answers CORE_STATE_NOT_INSTALLED: it has never been set up "
                "(the bluemind role's post-install step, or the Setup Wizard)", syslog.LOG_WARNING)
            return False
        if time.monotonic() > deadline:
            raise HaError(FAILED, f"BlueMind did not answer CORE_STATE_RUNNING within {conf['start_timeout']} s "
                                  f"(last answer: {seen})")
        time.sleep(2)


def stop_units(conf):
    changed = False
    for unit in reversed(units_in_order(conf)):
        active = subprocess.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0
        if active:
            run(["systemctl", "stop", unit], conf["stop_timeout"])
            changed = True
    # Units of the target that stopped late or were started by hand.
    leftover = run(["systemctl", "list-units", "--state=active", "--plain", "--no-legend", "bm-*"],
                   conf["step_timeout"], check=False).stdout.split("\n")
    for line in leftover:
        if line.split():
            run(["systemctl", "stop", line.split()[0]], conf["stop_timeout"], check=False)
            changed = True
    return reset_failed(conf, "deactivate") or changed


def reset_failed(conf, transition, extra=()):
    """Clear the failed state of BlueMind's units on a node that gives them up: a
    unit that died with its storage (PostgreSQL when the LUN lost its paths) would
    otherwise leave a passive node reported as broken. The journal keeps why it failed."""
    named = conf["units_before"] + [conf["target"]] + conf["units_after"]
    # With their templated instances (postgresql@15-main.service, postfix@-.service).
    units = named + [f"{u.rsplit('.', 1)[0]}@*.{u.rsplit('.', 1)[-1]}" for u in named if "." in u] + ["bm-*"]
    units += list(extra)
    listed = run(["systemctl", "list-units", "--all", "--state=failed", "--plain", "--no-legend", "--", *units],
                 conf["step_timeout"], check=False).stdout.split("\n")
    failed = [line.split()[0] for line in listed if line.split()]
    if not failed:
        return False
    run(["systemctl", "reset-failed", "--", *failed], conf["step_timeout"], check=False)
    log(f"{transition}: reset the failed state of {', '.join(failed)} (see each unit's journal for why it failed)",
        syslog.LOG_WARNING)
    return True


def unmount_one(conf, path):
    """Unmount, freeing the path if it is busy: stop what holds it (fuser -k),
    retry; the caller decides about the last resort."""
    for attempt in range(conf["unmount_attempts"]):
        proc = run(["umount", path], conf["step_timeout"], check=False)
        # Unmounted, by this call or meanwhile by another (systemd unmounts
        # everything while the node shuts down, alongside the shutdown unit's
        # deactivation).
        if proc.returncode == 0 or not is_mountpoint(path, mounts()):
            return True
        log(f"deactivate: {path} is busy (attempt {attempt + 1}): {proc.stderr.strip()}; stopping its holders",
            syslog.LOG_WARNING)
        for signal_name in ("-TERM", "-KILL"):
            try:
                run(["fuser", "-k", signal_name, "-m", path], conf["step_timeout"], check=False)
            except HaError as exc:
                # Without fuser the holders stay: the caller's last resort follows.
                log(f"deactivate: {exc}", syslog.LOG_ERR)
            if signal_name == "-TERM":
                time.sleep(2)
    return run(["umount", path], conf["step_timeout"], check=False).returncode == 0 or not is_mountpoint(path, mounts())


def unexpose_and_unmount(conf):
    changed = False
    # The BlueMind paths bound from the HA filesystem, anything mounted below it,
    # and the filesystem itself: newest first.
    for path in reversed(our_mounts(conf, mounts())):
        if not unmount_one(conf, path):
            if conf["reboot_if_stuck"]:
                log(f"deactivate: {path} cannot be unmounted; rebooting this node so that it does not keep "
                    "the storage", syslog.LOG_CRIT)
                run(["systemctl", "reboot", "--force", "--force"], conf["step_timeout"], check=False)
            raise HaError(FAILED, f"{path} cannot be unmounted")
        changed = True
    return changed


def activate(conf, reason):
    transition = Transition(conf, "activate", reason)
    try:
        transition.acquire()
        write_marker("activating", {"node": conf["node"], "since": time.time(), "timeout": conf["start_timeout"]
                                    + conf["claim_timeout"]})
        transition.step("claim", claim, conf)
        # The storage is this node's now: a release left over from an earlier
        # deactivation is moot.
        remove_marker(PENDING)
        transition.step("mount", mount_storage, conf)
        transition.step("expose", expose, conf)
        transition.step("mark", mark_active, conf)
        transition.step("start", start_units, conf)
        transition.step("ready", wait_ready, conf)
    except (HaError, Interrupted) as exc:
        transition.finish("failed" if isinstance(exc, HaError) else "interrupted", exc)
        return exc.code if isinstance(exc, HaError) else FAILED
    finally:
        remove_marker("activating")
    transition.finish("ok")
    hand_over_if_not_master()
    return OK


def hand_over_if_not_master():
    """After an activation: a FAULT that came during it (notify let it finish)
    still stands, so the deactivation follows. Started without waiting; it stops
    this unit (Conflicts=), whose work is done."""
    state = vrrp_state()
    if state in ("FAULT", "BACKUP", "STOP"):
        log(f"activate: VRRP is {state} now; starting the deactivation", syslog.LOG_WARNING)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run(["systemctl", "start", "--no-block", "bluemind-ha-deactivate.service"], 30, check=False)


# The marker of a shutdown's deactivation (bluemind-ha-shutdown.service): while
# it runs on the VRRP master, the health check keeps passing, so keepalived keeps
# the floating IP until BlueMind is stopped and the storage released, then hands
# it over when it stops (ordered after that unit). Without it the check failed as
# soon as the active marker went ("VRRP master but not active"), the peer took
# over while this node was still stopping, and on a SAN preempted its reservation
# under its last writes (the unmount's journal commit failed with reservation
# conflicts; seen in the lab's clean reboot of the active node, 2026-12-06).
#
# The marker is written first by mark-releasing, the stop of
# bluemind-ha-shutdown-begin.service: every BlueMind unit is ordered before that
# unit (the guard drop-in's Before=), so at a shutdown systemd stops them only
# once it exists. systemd stops them in parallel with the deactivation; without
# the early marker, on a slow node the watcher saw BlueMind stopped by systemd
# before the deactivation had written it, and the peer took over 6 s before the
# release (lab, one vCPU per node, 2026-12-06). The deactivation's own unit cannot
# be the one BlueMind waits for: its systemctl stop would wait for itself.
RELEASING = "releasing"


def releasing_bound(conf):
    """How long a releasing marker counts: bluemind-ha-shutdown.service's
    TimeoutStopSec (roles/controller/tasks/install.yml), the same formula."""
    return conf["stop_timeout"] * 2 + conf["step_timeout"] * 4 + conf["lock_timeout"]


def mark_releasing(conf):
    """The shutdown has begun (bluemind-ha-shutdown-begin.service stops): an
    active node keeps its verdict while BlueMind stops and the storage is
    released. A passive node has nothing to hand over: no marker. Nor has a
    node that is not shutting down (an operator stopped the unit): a marker
    would keep a failed BlueMind's verdict passing for the marker's bound."""
    if read_marker("active") is None and read_marker("activating") is None:
        log("mark-releasing: this node is passive, nothing to hand over")
        return OK
    manager = run(["systemctl", "is-system-running"], 10, check=False).stdout.strip()
    if manager != "stopping":
        log(f"mark-releasing: the system is not shutting down (systemd: {manager or 'no answer'}); no marker",
            syslog.LOG_WARNING)
        return OK
    write_marker(RELEASING, {"since": time.time(), "timeout": releasing_bound(conf)})
    log("mark-releasing: shutting down; the floating IP stays here until BlueMind is stopped and the storage "
        "released")
    return OK


def deactivate(conf, reason):
    transition = Transition(conf, "deactivate", reason)
    try:
        if reason == "shutdown":
            write_marker(RELEASING, {"since": time.time(), "timeout": releasing_bound(conf)})
        return _deactivate(conf, transition)
    finally:
        remove_marker(RELEASING)


def _deactivate(conf, transition):
    reason = transition.reason
    try:
        transition.acquire()
        # An activation announced by notify MASTER but replaced before it ran
        # must not keep the health check passing.
        remove_marker("activating")
        # First: nothing may start BlueMind here any more (the units' guard).
        transition.step("unmark", lambda: read_marker("active") is not None and (remove_marker("active") or True))
        transition.step("stop", stop_units, conf)
        transition.step("unmount", unexpose_and_unmount, conf)
        try:
            transition.step("release", release, conf)
        except HaError:
            # SAN: nothing is mounted or running here any more, only the LUN's
            # release (and the registration of a preempted key) is missing,
            # because no path is usable yet: the retry timer finishes it once one
            # is, whatever VRRP does meanwhile. A DRBD demote that fails on an
            # unmounted device is no transient state: it waits for an operator.
            if conf["storage"] == "san":
                write_marker(PENDING, {"since": time.time(), "reason": reason})
                log("deactivate: the release is left to the retry timer (bluemind-ha-retry.timer)",
                    syslog.LOG_WARNING)
            raise
        remove_marker(PENDING)
    except (HaError, Interrupted) as exc:
        transition.finish("failed" if isinstance(exc, HaError) else "interrupted", exc)
        return exc.code if isinstance(exc, HaError) else FAILED
    transition.finish("ok")
    return OK


def retry(conf):
    """The release a deactivation left pending, once it can succeed: not while a
    transition runs (it settles the storage itself), nor on a node that is, or is
    becoming, active (its activation claims the storage and clears the marker).
    SAN: only once a path of the map runs again (sysfs, no command); a release
    that still finds no usable path (multipathd has not reinstated one yet) stays
    pending, quietly, until the next run."""
    pending = read_marker(PENDING)
    if pending is None:
        return OK
    transition = Transition(conf, "release-retry", f"release pending since {fmt_time(pending.get('since'))}")
    if not transition.acquire(wait=False):
        return OK
    if read_marker("active") or read_marker("activating") or vrrp_state() == "MASTER":
        return OK
    if conf["storage"] == "san" and running_paths(conf) == 0:
        return OK

    def release_now():
        proc = run(storage_command(conf, "release"), conf["step_timeout"], check=False)
        if conf["storage"] == "san" and proc.returncode == SAN_NO_DEVICE:
            raise NotYet()
        return storage_changed(conf, "release", proc)

    try:
        transition.step("release", release_now)
        # The deactivation unit whose release failed, with the units.
        transition.step("reset", reset_failed, conf, "release-retry", ["bluemind-ha-deactivate.service"])
    except NotYet:
        return OK
    except HaError as exc:
        transition.finish("failed", exc)
        return exc.code
    remove_marker(PENDING)
    log(f"release-retry: the release that the deactivation of {fmt_time(pending.get('since'))} "
        f"({pending.get('reason')}) could not do is done")
    transition.finish("ok")
    return OK


def fmt_time(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch)) if epoch else "an unknown time"


# ---------------------------------------------------------------- health, notify, status

def storage_state(conf):
    try:
        proc = run(storage_command(conf, "status"), 20, check=False)
        return json.loads(proc.stdout) if proc.stdout.strip() else {"error": proc.stderr.strip()[-200:]}
    except (HaError, ValueError) as exc:
        return {"error": str(exc)}


def passive_ready(conf):
    """Could this node take over? DRBD: its disk is UpToDate. SAN: the map is
    there with a working path (the claim needs one)."""
    if conf["storage"] == "drbd":
        from_proc = read_proc_drbd_disk(conf)
        return from_proc == "UpToDate", f"DRBD disk {from_proc}"
    if not os.path.exists(conf["device"]):
        return False, f"{conf['device']} missing"
    paths = running_paths(conf)
    return paths > 0, f"{conf['device']} present, {paths} working path(s)"


def running_paths(conf, sysfs="/sys/block"):
    """The SAN map's paths whose SCSI device is running (sysfs, readable by the
    unprivileged check): a lost iSCSI session or FC link shows as blocked or
    transport-offline. 0 when the map is gone."""
    try:
        dm = os.path.basename(os.path.realpath(conf["device"]))
        slaves = os.listdir(os.path.join(sysfs, dm, "slaves"))
    except OSError:
        return 0
    count = 0
    for slave in slaves:
        try:
            with open(os.path.join(sysfs, dm, "slaves", slave, "device", "state"), encoding="utf-8") as handle:
                count += handle.read().strip() == "running"
        except OSError:
            continue
    return count


def pathless_for(paths):
    """Seconds the active node's SAN map has been without a working path (0 when it
    has one). The first check that finds none leaves a stamp in HEALTH_DIR (owned
    by keepalived's check user), the next ones measure from it, the first that
    finds a path removes it."""
    now = time.time()
    stamp = os.path.join(HEALTH_DIR, "pathless-since")
    if paths > 0:
        with contextlib.suppress(FileNotFoundError):
            os.remove(stamp)
        return 0.0
    try:
        with open(stamp, encoding="utf-8") as handle:
            return max(0.0, now - float(handle.read().strip()))
    except (OSError, ValueError):
        pass
    try:
        tmp = f"{stamp}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"{now}\n")
        os.replace(tmp, stamp)
    except OSError:
        # No place to count from: the grace cannot be measured, the path loss is
        # reported at once rather than never.
        return float("inf")
    return 0.0


def read_proc_drbd_disk(conf):
    state = nodelib.read_proc_drbd(conf["device"].replace("/dev/drbd", ""))
    return (state or {}).get("disk", "unknown")


def health(conf, units_max_age=0.0):
    """0 when this node is fine in its role. Runs as keepalived's unprivileged
    check user: reads only world-readable state. units_max_age: how old an answer
    of systemd about the units may be (the watcher's)."""
    if os.path.exists(os.path.join(RUN, "drain")):
        return FAILED, "drained by an operator"
    if os.path.exists(os.path.join(RUN, "suspend")):
        # Automatic failover suspended (an upgrade restarts BlueMind): the active
        # node keeps the floating IP whatever BlueMind answers; the passive node
        # cannot take it.
        if read_marker("active"):
            return OK, "active, automatic failover suspended by an operator"
        return FAILED, "passive, automatic failover suspended by an operator"
    activating = read_marker("activating")
    if activating and time.time() - activating.get("since", 0) < activating.get("timeout", 0):
        return OK, "activation in progress"
    releasing = read_marker(RELEASING)
    if (releasing and 0 <= time.time() - releasing.get("since", 0) < releasing.get("timeout", 0)
            and vrrp_state_since()[0] == "MASTER"):
        # Before BlueMind's own verdict: systemd may be stopping BlueMind already.
        return OK, "shutting down: the floating IP stays until BlueMind is stopped and the storage released"
    active = read_marker("active")
    if active:
        state = bluemind_state(conf)
        if state in READY_STATES or (state == "CORE_STATE_NOT_INSTALLED" and not active.get("installed")):
            # bm-core answering is not enough: users come through bm-nginx.
            down = units_down_cached(conf, units_max_age) if units_max_age else units_down(conf)
            if down:
                return FAILED, f"active, BlueMind {state}, but {', '.join(down)}"
            pathless = ""
            if conf["storage"] == "san":
                # Every path lost: multipath queues the I/O for the grace (a short
                # SAN outage passes unnoticed), then fails it; from then on the
                # peer, if it still sees the LUN, must take over.
                seconds = pathless_for(running_paths(conf))
                grace = conf["storage_grace"]
                if seconds == float("inf"):
                    return FAILED, f"active, no working path to the LUN (no {HEALTH_DIR} to time the grace in)"
                if seconds >= grace:
                    return FAILED, (f"active, no working path to the LUN for {seconds:.0f} s (multipath queues "
                                    f"I/O {grace} s, then fails it)")
                if seconds:
                    pathless = f", no working path to the LUN for {seconds:.0f} s (grace {grace} s)"
            for check in conf["checks"]:
                proc = subprocess.run(check, shell=True, capture_output=True, timeout=30, check=False)  # nosec B602
                if proc.returncode != 0:
                    return FAILED, f"check {check} failed (exit {proc.returncode})"
            return OK, f"active, BlueMind {state}{pathless}"
        return FAILED, f"active, BlueMind answers {state}"
    state, since = vrrp_state_since()
    if state == "MASTER":
        # The notify hook records MASTER, then starts a Python program that marks
        # the activation (about a second, more on a busy node): a check in between
        # must not send the new master to FAULT. An activation that failed since
        # then fails the check at once.
        last = history(1)
        failed = bool(last) and last[-1].get("transition") == "activate" and last[-1].get("ended", 0) >= since
        age = time.time() - since
        if not failed and 0 <= age < MASTER_GRACE:
            return OK, f"VRRP master for {age:.0f} s, the activation is starting"
        return FAILED, "VRRP master but not active (the activation failed or has not started)"
    ready, why = passive_ready(conf)
    return (OK if ready else FAILED), f"passive, {why}"


# ---------------------------------------------------------------- the health watcher

def sd_notify(message):
    """systemd's notification protocol (sd_notify(3)), without libsystemd: nothing
    outside a unit that asked for it (NOTIFY_SOCKET unset)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def read_verdict(path):
    """The verdict keepalived reads: True (1), False (0), None (no file yet)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() != "0"
    except OSError:
        return None


class Verdict:
    """The checks' results through fall and rise: the verdict changes only after
    fall failed checks in a row (rise passed ones). Without an earlier verdict the
    first check decides."""

    def __init__(self, ok, fall, rise):
        self.ok, self.fall, self.rise, self.streak = ok, fall, rise, 0

    def update(self, passed):
        """Count one check; True when the verdict changed."""
        if self.ok is None or passed == self.ok:
            changed, self.ok, self.streak = self.ok is None, passed, 0
            return changed
        self.streak += 1
        if self.streak < (self.rise if passed else self.fall):
            return False
        self.ok, self.streak = passed, 0
        return True


def watch_options(args):
    """health --watch FILE [--interval S] [--fall N] [--rise N] [--timeout S]."""
    values = {"--watch": None, "--interval": "1", "--fall": "2", "--rise": "2", "--timeout": "30"}
    rest = list(args)
    while rest:
        name = rest.pop(0)
        if name not in values or not rest:
            raise HaError(USAGE, "usage: bluemind-ha health [--watch FILE [--interval S] [--fall N] [--rise N] "
                                 "[--timeout S]]")
        values[name] = rest.pop(0)
    try:
        options = {"path": values["--watch"], "interval": float(values["--interval"]),
                   "fall": int(values["--fall"]), "rise": int(values["--rise"]), "timeout": float(values["--timeout"])}
    except ValueError as exc:
        raise HaError(USAGE, f"health --watch: {exc}") from exc
    if not options["path"] or options["interval"] <= 0 or options["fall"] < 1 or options["rise"] < 1 \
            or options["timeout"] <= options["interval"]:
        raise HaError(USAGE, "health --watch: a FILE, an interval above 0, fall and rise of at least 1, and a "
                             "timeout above the interval")
    return options


def changed_since(paths, seen):
    """Whether any of paths has another modification time than seen (updated)."""
    changed = False
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            mtime = None
        changed = changed or (path in seen and seen[path] != mtime)
        seen[path] = mtime
    return changed


def watch(path, options, checks=None, clock=time.monotonic, sleep=time.sleep, rounds=None):
    """The health watcher: check every interval, write the verdict keepalived reads
    (path: 1 healthy, 0 failing; written when it changes, atomically: keepalived
    reads it on the rename) and its details (path.json, at every check), then ping
    systemd's watchdog. A check that raises counts as failed. The configuration is
    read again when it changes; when the program itself changes the watcher exits
    0 and systemd starts the new one (Restart=always), which carries the verdict on
    from the file. checks: a function returning (code, why), for the tests."""
    verdict = Verdict(read_verdict(options["path"]), options["fall"], options["rise"])
    programs = [os.path.abspath(__file__), os.path.abspath(nodelib.__file__)]
    seen = {}
    changed_since(programs + [path], seen)
    conf = None
    done = 0
    while rounds is None or done < rounds:
        started = clock()
        if changed_since(programs, seen):
            log("health: the program changed; exiting for systemd to start the new one")
            return OK
        try:
            if conf is None or changed_since([path], seen):
                conf = load(path)
            code, why = checks() if checks else health(conf, units_max_age=UNITS_EVERY)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            code, why = FAILED, f"the check could not run: {exc}"
        if verdict.update(code == OK) or read_verdict(options["path"]) is None:
            write_atomically(options["path"], "1\n" if verdict.ok else "0\n")
            log(f"health: verdict {'healthy' if verdict.ok else 'failing'} ({why})",
                syslog.LOG_NOTICE if verdict.ok else syslog.LOG_WARNING)
        took = clock() - started
        write_atomically(options["path"] + ".json", json.dumps({
            "ok": verdict.ok, "check_ok": code == OK, "why": why, "time": round(time.time(), 3),
            "seconds": round(took, 3), "streak": verdict.streak, "interval": options["interval"],
            "stale_after": options["timeout"], "pid": os.getpid()}) + "\n")
        sd_notify(f"READY=1\nWATCHDOG=1\nSTATUS={'healthy' if verdict.ok else 'failing'}: {why}"[:400])
        done += 1
        if rounds is None or done < rounds:
            sleep(max(0.0, options["interval"] - (clock() - started)))
    return OK


def verdict_report(path, now=None):
    """The watcher's last verdict as status shows it: ok, why, age, stale."""
    now = time.time() if now is None else now
    try:
        with open(path + ".json", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {"ok": read_verdict(path), "why": "no verdict written yet", "age": None, "stale": True}
    age = max(0.0, now - float(data.get("time", 0)))
    return {"ok": read_verdict(path), "why": data.get("why", ""), "age": round(age, 1),
            "stale": age > float(data.get("stale_after", 30))}


def notify(conf, state):
    unit = "bluemind-ha-activate.service" if state == "MASTER" else "bluemind-ha-deactivate.service"
    if state == "FAULT" and unit_state("bluemind-ha-activate.service") == "activating":
        # The node's own checks (or its uplink) fail during its activation: on a
        # busy survivor that only says it is slow. Stopping the activation then
        # served nobody (the peer may be dead); it finishes, or fails, on its own
        # bounds, and hands over afterwards if the node is no longer master.
        log("notify: VRRP FAULT during the activation: the activation goes on; the deactivation follows it "
            "if this node is not master when it ends", syslog.LOG_WARNING)
        return OK
    if state == "MASTER":
        # From now on the health check reports "activation in progress": without
        # this a check between this notify and the activation's start saw a master
        # that is not active, failed, and sent the node to FAULT.
        write_marker("activating", {"node": conf["node"], "since": time.time(),
                                    "timeout": conf["lock_timeout"] + conf["claim_timeout"] + conf["start_timeout"]})
    log(f"notify: VRRP {state}: starting {unit}")
    run(["systemctl", "start", "--no-block", unit], 30)
    return OK


def unit_state(unit):
    return subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True,
                          check=False).stdout.strip() or "unknown"


def status(conf):
    table = mounts()
    active = read_marker("active")
    units = units_in_order(conf)
    report = {
        "node": conf["node"], "peer": conf["peer"],
        "role": "active" if active else ("activating" if read_marker("activating") else "passive"),
        "vrrp": vrrp_state(), "drained": os.path.exists(os.path.join(RUN, "drain")),
        "suspended": os.path.exists(os.path.join(RUN, "suspend")),
        "release_pending": read_marker(PENDING),
        "storage": dict(storage_state(conf), method=conf["storage"]),
        "mounted": is_mountpoint(conf["mountpoint"], table),
        "exposed": [t for t in our_mounts(conf, table) if t in conf["paths"]],
        "units": {u: unit_state(u) for u in units},
        "bluemind": bluemind_state(conf) if active else None,
        "transitions": history(10),
    }
    storage = report["storage"]
    # The peer as this node's storage sees it (DRBD's connection, the SAN's
    # reservation): no other channel to the peer is needed, or trusted.
    report["peer_view"] = {
        "node": conf["peer"],
        "reachable": storage.get("connection") == "Connected" if conf["storage"] == "drbd"
        else conf["peer"] in storage.get("registered", []),
        "holds_storage": storage.get("peer_role") == "Primary" if conf["storage"] == "drbd"
        else storage.get("holder") == conf["peer"],
        "storage": {k: storage[k] for k in ("peer_role", "peer_disk") if k in storage},
    }
    code, why = health(conf)
    report["health"] = {"ok": code == OK, "why": why}
    # What keepalived acts on: the watcher's verdict, with its age.
    report["verdict"] = verdict_report(VERDICT)
    return report


def human(report):
    lines = [f"{report['node']}: {report['role']} (VRRP {report['vrrp']}), health "
             f"{'ok' if report['health']['ok'] else 'FAILING'}: {report['health']['why']}"
             + (", drained" if report["drained"] else "")
             + (", automatic failover suspended" if report.get("suspended") else "")
             + (", storage release pending (retried by bluemind-ha-retry.timer)" if report.get("release_pending")
                else ""),
             f"storage ({report['storage'].get('method')}): "
             + ", ".join(f"{k} {v}" for k, v in report["storage"].items() if k in (
                 "role", "disk", "peer_role", "peer_disk", "connection", "holder", "paths", "error")),
             f"peer {report['peer_view']['node']}: "
             + ("holds the storage" if report["peer_view"]["holds_storage"] else "does not hold the storage")
             + ("" if report["peer_view"]["reachable"] else " (not seen by the storage)"),
             verdict_line(report.get("verdict")),
             f"mounted: {'yes' if report['mounted'] else 'no'}; exposed paths: {len(report['exposed'])}",
             "units: " + ", ".join(f"{u} {s}" for u, s in report["units"].items())]
    if report["bluemind"]:
        lines.append(f"BlueMind: {report['bluemind']}")
    for entry in report["transitions"][-5:]:
        lines.append(f"  {entry.get('time')} {entry.get('transition')} {entry.get('outcome')} "
                     f"in {entry.get('seconds')} s ({entry.get('reason')})")
    return "\n".join(lines)


def verdict_line(verdict):
    if not verdict:
        return "keepalived's verdict: unknown"
    state = {True: "healthy", False: "failing", None: "none"}[verdict["ok"]]
    age = "never written" if verdict["age"] is None else f"{verdict['age']:.0f} s old"
    return (f"keepalived's verdict (bluemind-ha-health): {state}, {age}"
            + (", STALE (is bluemind-ha-health.service running?)" if verdict["stale"] else ""))


# ---------------------------------------------------------------- monitoring

NAGIOS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}
FAILED_TRANSITION_WARNS = 86400


def storage_ok(report):
    """This node's storage as its role needs it. DRBD: UpToDate and connected to
    the peer (a Primary alone serves, but has no copy). SAN: a working path, and
    the node's key registered (a passive node must be able to take over)."""
    storage = report["storage"]
    if storage.get("error"):
        return False
    if storage.get("method") == "drbd":
        return storage.get("disk") == "UpToDate" and storage.get("connection") == "Connected"
    return bool(storage.get("active_paths")) and bool(storage.get("registered_here"))


def nagios(report):
    """(exit code, line) of the Nagios plugin guidelines for this node's report."""
    last = report["transitions"][-1] if report["transitions"] else None
    problems, worst = [], 0

    def problem(code, text):
        nonlocal worst
        problems.append(text)
        worst = max(worst, code)

    role, health = report["role"], report["health"]
    if role == "active" and not health["ok"]:
        problem(2, f"active but failing: {health['why']}")
    elif role != "active" and report["vrrp"] == "MASTER" and role != "activating":
        problem(2, "VRRP master but not active")
    elif role == "passive" and not health["ok"] and not report["drained"] and not report.get("suspended"):
        problem(1, f"cannot take over: {health['why']}")
    if not storage_ok(report):
        shown = ("disk", "connection", "active_paths", "registered_here", "error")
        problem(1, "storage degraded: " + ", ".join(
            f"{k} {v}" for k, v in report["storage"].items() if k in shown))
    if report["drained"]:
        problem(1, "drained")
    if report.get("suspended"):
        problem(1, "automatic failover suspended")
    if report.get("release_pending"):
        problem(1, "storage release pending")
    verdict = report.get("verdict")
    if verdict and verdict["stale"]:
        problem(1, "keepalived's health verdict is stale (" + (
            "never written" if verdict["age"] is None else f"{verdict['age']:.0f} s old") + ")")
    # A failed transition warns for a day (then the node's current state speaks
    # for itself; the metrics keep last_transition_ok for alert rules).
    if last and last.get("outcome") != "ok" and time.time() - last.get("ended", 0) < FAILED_TRANSITION_WARNS:
        problem(1, f"last transition {last.get('transition')} {last.get('outcome')} at {last.get('time')}")
    summary = f"{report['node']} {role} (VRRP {report['vrrp']})"
    if report.get("bluemind"):
        summary += f", BlueMind {report['bluemind']}"
    perf = [f"active={int(role == 'active')};;;0;1", f"health={int(health['ok'])};;;0;1",
            f"storage_ok={int(storage_ok(report))};;;0;1"]
    if last:
        perf.append(f"last_transition_seconds={last.get('seconds', 0)}s;;;0")
        if last.get("ended"):
            perf.append(f"since_last_transition={max(0, round(time.time() - last['ended']))}s;;;0")
    text = "; ".join(problems) if problems else ("serving" if role == "active" else "ready to take over")
    return worst, f"BLUEMIND-HA {NAGIOS[worst]} - {summary}: {text} | {' '.join(perf)}"


def prometheus(report, now=None):
    """node_exporter textfile metrics for this node's report."""
    now = time.time() if now is None else now
    node = report["node"]
    storage = report["storage"]
    lines = []

    def metric(name, help_text, samples, kind="gauge"):
        lines.append(f"# HELP bluemind_ha_{name} {help_text}")
        lines.append(f"# TYPE bluemind_ha_{name} {kind}")
        for labels, value in samples:
            pairs = ",".join(f'{k}="{v}"' for k, v in {"node": node, **labels}.items())
            lines.append(f"bluemind_ha_{name}{{{pairs}}} {value}")

    metric("info", "The node, its peer and the storage method (always 1).",
           [({"peer": report["peer"], "storage": storage.get("method", "")}, 1)])
    metric("active", "1 when this node is the active one.", [({}, int(report["role"] == "active"))])
    metric("role", "This node's role (one series per role, 1 for the current one).",
           [({"role": r}, int(report["role"] == r)) for r in ("active", "activating", "passive")])
    metric("vrrp_state", "keepalived's state on this node (1 for the current one).",
           [({"state": s}, int(report["vrrp"] == s)) for s in ("MASTER", "BACKUP", "FAULT", "STOP", "UNKNOWN")])
    metric("health_ok", "1 when this node is fine in its role (keepalived's check).", [({}, int(report["health"]["ok"]))])
    verdict = report.get("verdict") or {}
    metric("verdict_ok", "1 when the health verdict keepalived tracks is healthy.", [({}, int(bool(verdict.get("ok"))))])
    metric("verdict_stale", "1 when the health watcher has not renewed its verdict within its bound.",
           [({}, int(bool(verdict.get("stale", True))))])
    metric("storage_ok", "1 when the storage is as the role needs it (DRBD UpToDate and connected; SAN a "
           "working path and this node's key registered).", [({}, int(storage_ok(report)))])
    if storage.get("method") == "san":
        metric("san_paths", "Working paths to the SAN LUN (multipathd: active and ready).",
               [({}, int(storage.get("active_paths") or 0))])
    metric("mounted", "1 when the BlueMind filesystem is mounted here.", [({}, int(bool(report["mounted"])))])
    metric("bluemind_running", "1 when BlueMind answers CORE_STATE_RUNNING here.",
           [({}, int(report.get("bluemind") == "CORE_STATE_RUNNING"))])
    metric("drained", "1 while an operator's drain is set.", [({}, int(bool(report["drained"])))])
    metric("suspended", "1 while automatic failover is suspended.", [({}, int(bool(report.get("suspended"))))])
    metric("release_pending", "1 while a storage release waits for the retry timer.",
           [({}, int(bool(report.get("release_pending"))))])
    last = report["transitions"][-1] if report["transitions"] else None
    if last:
        labels = {"transition": last.get("transition", ""), "outcome": last.get("outcome", "")}
        metric("last_transition_ok", "1 when the last transition succeeded.",
               [(labels, int(last.get("outcome") == "ok"))])
        metric("last_transition_duration_seconds", "How long the last transition took.",
               [(labels, last.get("seconds", 0))])
        if last.get("ended"):
            metric("last_transition_timestamp_seconds", "When the last transition ended (epoch).",
                   [(labels, last["ended"])])
            metric("seconds_since_last_transition", "Seconds since the last transition ended.",
                   [(labels, max(0, round(now - last["ended"])))])
    metric("metrics_timestamp_seconds", "When these metrics were written (epoch): alert when it stops moving.",
           [({}, round(now, 3))])
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    """Write text to path through a temporary file in its directory and a rename:
    a reader (node_exporter) never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def set_flag(name, reason):
    """drain or suspend: a marker in RUN that the health check reads (a reboot
    clears it); says whether it was already set."""
    new = not os.path.exists(os.path.join(RUN, name))
    write_marker(name, {"since": time.time(), "reason": reason})
    log(f"{name}: {'set' if new else 'already set'} ({reason})", syslog.LOG_WARNING)
    print(f"{name}: {'set' if new else 'already set'}")
    return OK


def clear_flag(name):
    present = os.path.exists(os.path.join(RUN, name))
    remove_marker(name)
    if present:
        log(f"{name}: cleared")
    print(f"{name}: {'cleared' if present else 'not set'}")
    return OK


def interrupt(_signum, _frame):
    raise Interrupted("stopped by SIGTERM")


def main(argv):
    parsed = nodelib.start(argv, "bluemind-ha", __doc__, COMMANDS, CONFIG)
    if isinstance(parsed, int):
        return parsed
    path, command, args = parsed
    reason = args[args.index("--reason") + 1] if "--reason" in args[:-1] else "manual"
    try:
        conf = load(path)
        if command == "activate":
            signal.signal(signal.SIGTERM, interrupt)
            return activate(conf, reason)
        if command == "deactivate":
            signal.signal(signal.SIGTERM, interrupt)
            return deactivate(conf, reason)
        if command == "health":
            if args:
                signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(OK))
                return watch(path, watch_options(args))
            code, why = health(conf)
            print(why)
            return code
        if command == "notify":
            if not args or args[0] not in ("MASTER", "BACKUP", "FAULT", "STOP"):
                raise HaError(USAGE, "usage: bluemind-ha notify MASTER|BACKUP|FAULT|STOP")
            return notify(conf, args[0])
        if command in ("drain", "suspend"):
            return set_flag(command, reason)
        if command == "retry":
            return retry(conf)
        if command == "mark-releasing":
            return mark_releasing(conf)
        if command in ("undrain", "resume"):
            return clear_flag({"undrain": "drain", "resume": "suspend"}[command])
        if "--nagios" in args:
            try:
                code, line = nagios(status(conf))
            except Exception as exc:  # pylint: disable=broad-exception-caught
                code, line = 3, f"BLUEMIND-HA UNKNOWN - the status could not be read: {exc}"
            print(line)
            return code
        report = status(conf)
        if "--prometheus" in args:
            text = prometheus(report)
            if "--output" in args[:-1]:
                write_atomically(args[args.index("--output") + 1], text)
            else:
                print(text, end="")
            return OK
        print(json.dumps(report, indent=2) if "--json" in args else human(report))
        return OK
    except HaError as exc:
        if command == "status" and "--nagios" in args:
            # The plugin guidelines' UNKNOWN, whatever went wrong (a missing configuration).
            print(f"BLUEMIND-HA UNKNOWN - {exc}")
            return 3
        log(f"{command}: failed (exit {exc.code}): {exc}", syslog.LOG_ERR)
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
