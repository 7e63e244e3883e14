# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bluemind-ha-fence - power the peer node of a BlueMind HA pair off or on
through its management controller (Redfish or IPMI).

usage: bluemind-ha-fence [--config FILE] check|status|off|on|reboot

  check   query the peer's controller (reachable, credentials accepted),
          without touching the power
  status  print the peer's power state: on or off
  off     power the peer off and wait (bounded) until its controller reports
          it off; a peer already off is success at once. On the node that is
          passive at the time of the call, a delay comes first, so that in a
          partition the active node's call wins.
  on      power the peer on
  reboot  power the peer off, then on

The action itself is done by the distribution's fence agent (fence_redfish or
fence_ipmilan), given its options on standard input so that no secret appears
in the process list.

A node is active when its VRRP state (written by keepalived's notify hook in
/run/bluemind-ha/vrrp-state) is MASTER and has been for longer than the
takeover window; a node that has just become MASTER is still taking over, so it
counts as passive.

Exit codes:
  0  done, or the peer was already in the requested state (status: printed)
  1  the controller or the agent failed in another way
  2  usage or configuration error
  3  the controller is unreachable
  4  the controller refused the credentials
  5  timeout: the peer did not reach the requested state in time

Every call and its outcome go to the journal (identifier bluemind-ha-fence)
and to /var/log/bluemind-ha/fence.log.
"""
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import syslog
import time
import urllib.error
import urllib.request

import bluemind_ha_node as nodelib

CONFIG = "/etc/bluemind-ha/fence.json"
LOG = "/var/log/bluemind-ha/fence.log"
VRRP_STATE = "/run/bluemind-ha/vrrp-state"
OK, FAILED, USAGE, UNREACHABLE, CREDENTIALS, TIMEOUT = 0, 1, 2, 3, 4, 5
ACTIONS = ("check", "status", "off", "on", "reboot")


class FenceError(nodelib.NodeError):
    """A failure of bluemind-ha-fence, with its exit code."""


def log(message):
    syslog.syslog(syslog.LOG_NOTICE, message)
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {message}\n"
    try:
        os.makedirs(os.path.dirname(LOG), mode=0o750, exist_ok=True)
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)  # a fencing decision must survive the power cut that may follow
        finally:
            os.close(fd)
    except OSError:
        pass
    sys.stderr.write(line)


def role(conf):
    """active or passive, and why."""
    try:
        with open(VRRP_STATE, encoding="utf-8") as handle:
            state, since = handle.read().split()[:2]
        age = time.time() - float(since)
    except (OSError, ValueError):
        return "passive", "no VRRP state"
    if state == "MASTER" and age > conf["takeover_window"]:
        return "active", f"VRRP MASTER for {age:.0f} s"
    return "passive", f"VRRP {state} for {age:.0f} s"


def redfish_get(conf, context, path):
    url = f"https://{conf['address']}:{conf['port']}{path}"
    token = base64.b64encode(f"{conf['username']}:{conf['password']}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}",
                                                   "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=conf["connect_timeout"], context=context) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise FenceError(CREDENTIALS, f"controller {url} refused the credentials (HTTP {exc.code})") from exc
        raise FenceError(FAILED, f"controller {url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FenceError(UNREACHABLE, f"controller {url} is unreachable: {reason}") from exc
    except ValueError as exc:
        raise FenceError(FAILED, f"controller {url} answered something that is not Redfish JSON") from exc


def redfish_probe(conf):
    """Query the controller: reachable, credentials accepted; the peer's power state."""
    context = ssl.create_default_context()
    if conf["tls"] == "insecure":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    uri = conf.get("systems_uri")
    if not uri:
        members = redfish_get(conf, context, "/redfish/v1/Systems").get("Members") or []
        if len(members) != 1:
            raise FenceError(USAGE, f"controller {conf['address']} manages {len(members)} systems; "
                                    "set systems_uri in bluemind_ha_bmc")
        uri = members[0]["@odata.id"]
    state = str(redfish_get(conf, context, uri).get("PowerState", "")).strip().lower()
    return "off" if state == "off" else "on"


def ipmi_probe(conf):
    env = dict(os.environ, IPMI_PASSWORD=conf["password"])
    argv = ["ipmitool", "-I", "lanplus", "-H", conf["address"], "-p", str(conf["port"]),
            "-U", conf["username"], "-E", "-N", str(conf["connect_timeout"]), "-R", "1",
            "chassis", "power", "status"]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=conf["connect_timeout"] * 3,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise FenceError(UNREACHABLE, f"controller {conf['address']} did not answer IPMI") from exc
    if proc.returncode != 0:
        text = proc.stderr.lower()
        if "unauthorized" in text or "rakp" in text or "invalid user" in text or "password" in text:
            raise FenceError(CREDENTIALS, f"controller {conf['address']} refused the credentials")
        raise FenceError(UNREACHABLE, f"controller {conf['address']} is unreachable: {proc.stderr.strip()}")
    return "off" if "power is off" in proc.stdout.lower() else "on"


def agent(conf, action):
    """Run the fence agent with its options on stdin; its exit code."""
    if conf["type"] == "redfish":
        argv = ["fence_redfish"]
        options = {"ip": conf["address"], "ipport": conf["port"], "username": conf["username"],
                   "password": conf["password"]}
        if conf["tls"] == "insecure":
            options["ssl_insecure"] = "1"
        if conf.get("systems_uri"):
            options["systems_uri"] = conf["systems_uri"]
    else:
        argv = ["fence_ipmilan"]
        options = {"ip": conf["address"], "ipport": conf["port"], "username": conf["username"],
                   "password": conf["password"], "lanplus": "1"}
    options.update({"action": action, "power_timeout": conf["timeout"], "power_wait": "1",
                    "login_timeout": conf["connect_timeout"]})
    stdin = "".join(f"{key}={value}\n" for key, value in options.items())
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=conf["timeout"] + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FenceError(TIMEOUT, f"{argv[0]} {action} did not finish within {conf['timeout'] + 30} s") from exc
    return proc.returncode, (proc.stdout + proc.stderr).strip()


# Every key is rendered by the role from its defaults: a missing one is an error
# (a program default had drifted from the role's passive delay).
REQUIRED = ("peer", "type", "address", "port", "username", "password", "tls", "systems_uri", "timeout",
            "connect_timeout", "passive_delay", "takeover_window")


def load(path):
    return nodelib.load(path, REQUIRED, FenceError)


def run(conf, action):
    peer = f"{conf['peer']} (controller {conf['type']} {conf['address']}:{conf['port']})"
    # The command's own query tells an unreachable controller from refused
    # credentials, and reads the power state without starting an agent.
    state = (redfish_probe if conf["type"] == "redfish" else ipmi_probe)(conf)
    if action == "check":
        log(f"check: {peer} answers and accepts the credentials; the peer is {state}")
        return OK
    if action == "status":
        print(state)
        log(f"status: {peer} is {state}")
        return OK
    if action == "off" and state == "off":
        log(f"off: {peer} is already off")
        return OK
    if action == "off":
        mine, why = role(conf)
        if mine == "passive" and conf["passive_delay"] > 0:
            log(f"off: this node is passive ({why}); waiting {conf['passive_delay']} s before fencing {peer}")
            time.sleep(conf["passive_delay"])
        else:
            log(f"off: this node is {mine} ({why}); fencing {peer} now")
    if action == "on" and state == "on":
        log(f"on: {peer} is already on")
        return OK
    start = time.monotonic()
    rc, out = agent(conf, action)
    took = time.monotonic() - start
    if rc != 0:
        code = TIMEOUT if "timed out" in out.lower() or "timeout" in out.lower() else FAILED
        raise FenceError(code, f"{action} of {peer} failed after {took:.1f} s: {out}")
    log(f"{action}: done on {peer} in {took:.1f} s")
    return OK


def main(argv):
    parsed = nodelib.start(argv, "bluemind-ha-fence", __doc__, ACTIONS, CONFIG, extra=False)
    if isinstance(parsed, int):
        return parsed
    path, action, _args = parsed
    try:
        conf = load(path)
        log(f"call: {action} of peer {conf['peer']} by {socket.gethostname()}")
        return run(conf, action)
    except FenceError as exc:
        log(f"{action}: failed (exit {exc.code}): {exc}")
        return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
