#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report what a node of a BlueMind HA pair is made of."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_node_info
short_description: Report the facts that decide whether a host can join a BlueMind HA pair
version_added: 0.1.0
description:
  - Runs on one node and changes nothing. Reports the operating system, the
    installed version of chosen packages, the network interfaces and their
    addresses (telling static addresses from DHCP or SLAAC ones), the host names,
    the block devices with their WWID and existing signatures, and whether the
    clock is synchronised.
  - Optionally probes addresses from the node (one ICMP echo, then the neighbour
    table), which tells whether a floating IP is already answering and whether
    the peer answers.
  - Its result, C(ha_node), is what M(bluemind_ha.cluster.ha_pair_check) compares
    across the two nodes.
author:
  - BlueMind HA collection maintainers (@bluemind-ha)
options:
  packages:
    description:
      - Debian package names whose installed version to report.
      - A package that is not installed (or only configured-files) is reported as V(null).
    type: list
    elements: str
    default: []
  devices:
    description:
      - Extra block device paths to report, such as C(/dev/disk/by-id/...) links.
      - Each is resolved to its kernel device; the entry of that device in
        RV(ha_node.block_devices) lists the path under C(aliases).
      - A path that does not exist is reported under RV(ha_node.missing_devices).
    type: list
    elements: path
    default: []
  probe:
    description:
      - Addresses to probe from this node, IPv4 or IPv6, without prefix.
      - The probe flushes the address from the neighbour cache, sends one ICMP echo
        and then reads the neighbour table, so a host that drops ICMP but answers
        ARP or neighbour discovery still counts as answering, and a stale cache
        entry does not.
    type: list
    elements: str
    default: []
  probe_timeout:
    description: Seconds to wait for each probe's echo reply.
    type: int
    default: 1
attributes:
  check_mode:
    support: full
    description: The module never changes anything, so check mode runs it unchanged.
  diff_mode:
    support: none
    description: Nothing changes, so there is no difference to report.
notes:
  - Needs C(ip) from iproute2 with JSON output, C(lsblk), C(blkid), C(udevadm) and C(dpkg-query).
  - Addresses with C(scope link) (IPv6 link-local) are reported but flagged C(link_local).
seealso:
  - module: bluemind_ha.cluster.ha_pair_check
"""

EXAMPLES = r"""
- name: Gather the facts preflight compares
  bluemind_ha.cluster.ha_node_info:
    packages: [keepalived, drbd-utils, bm-core]
    devices: [/dev/disk/by-id/virtio-drbd]
    probe: [192.168.60.100]
  register: node_info

- name: Show the addresses of the public interface
  ansible.builtin.debug:
    msg: "{{ node_info.ha_node.interfaces | selectattr('name', '==', 'eth1') | map(attribute='addresses') }}"
"""

RETURN = r"""
ha_node:
  description: What the node is made of.
  returned: always
  type: dict
  contains:
    os:
      description: Operating system, from C(/etc/os-release), the package architecture and C(uname -r).
      type: dict
      returned: always
      sample: {id: debian, version_id: "12", codename: bookworm, architecture: amd64, kernel: 6.1.0-27-cloud-amd64}
    packages:
      description: Installed version of each package of the O(packages) option, V(null) when absent.
      type: dict
      returned: always
      sample: {keepalived: "1:2.2.7-1+b2", bm-core: null}
    interfaces:
      description: >-
        Every network interface: C(name), C(mac), C(state) (C(UP), C(DOWN), C(UNKNOWN)...)
        and C(addresses), each with C(address), C(family) (C(ipv4) or C(ipv6)), C(prefix),
        C(dynamic) (true for DHCP and SLAAC addresses, that is addresses with a lifetime)
        and C(link_local).
      type: list
      elements: dict
      returned: always
      sample:
        - name: eth1
          mac: "52:54:00:3c:00:11"
          state: UP
          addresses:
            - {address: 192.168.60.11, family: ipv4, prefix: 24, dynamic: false, link_local: false}
    hostname:
      description: The short host name.
      type: str
      returned: always
      sample: node1
    fqdn:
      description: The fully qualified name the resolver gives (C(hostname --fqdn)).
      type: str
      returned: always
      sample: node1.example.org
    product_uuid:
      description:
        - The server's system UUID from its firmware (DMI/SMBIOS, C(/sys/class/dmi/id/product_uuid)), lower case;
          V(null) when the firmware gives none or it cannot be read.
        - The fencing role compares it with the UUID the peer's management controller reports, so that a node
          never fences itself or another server.
      type: str
      returned: always
      sample: 4c4c4544-0042-3510-8050-b4c04f4e4d32
    product_uuid_swapped:
      description:
        - RV(ha_node.product_uuid) with its first three fields byte-swapped (SMBIOS before 2.6 left their byte
          order open; a management controller may report that form). V(null) when there is no product UUID.
      type: str
      returned: always
      sample: 44454c4c-4200-1035-8050-b4c04f4e4d32
    block_devices:
      description: >-
        Every disk and multipath device: C(path), C(name), C(size) in bytes, C(type),
        C(wwid) (V(null) when the device has none), C(wwn) and C(serial) (the WWN and serial
        number udev reads, V(null) when none), C(signature) (the type of what
        C(blkid -p) finds on the device, such as C(xfs), C(drbd) or a partition table
        C(gpt), V(null) when blank), C(label), C(children) (names of partitions and
        holders), C(mountpoints) and C(aliases) (the O(devices) paths that lead to it).
      type: list
      elements: dict
      returned: always
      sample:
        - {path: /dev/vdb, name: vdb, size: 2147483648, type: disk, wwid: null, wwn: null, serial: drbd, signature: null,
           label: null, children: [], mountpoints: [], aliases: [/dev/disk/by-id/virtio-drbd]}
    missing_devices:
      description: The O(devices) paths that do not exist.
      type: list
      elements: str
      returned: always
      sample: []
    time_synchronized:
      description: Whether the kernel clock is synchronised (C(timedatectl)'s NTPSynchronized), V(null) if unknown.
      type: bool
      returned: always
      sample: true
    probes:
      description: >-
        One entry per O(probe) address: C(address), C(answers) (something replied to the
        echo or to ARP/ND), C(mac) (the link-layer address that answered, when known) and
        C(local) (the address is on this node, so it was not probed).
      type: list
      elements: dict
      returned: always
      sample: [{address: 192.168.60.100, answers: false, mac: null, local: false}]
"""

import ipaddress
import json
import os
import platform
import socket

from ansible.module_utils.basic import AnsibleModule

# A lifetime of "forever" in `ip -j addr` output.
FOREVER = 4294967295
# Neighbour states that prove an answer after the entry was flushed (a STALE entry
# only proves that something answered minutes ago).
REACHED_STATES = {"REACHABLE", "PERMANENT", "NOARP"}
OS_RELEASE = "/etc/os-release"


def resolve_device(path: str):
    """The kernel device a path leads to, or None when it does not exist."""
    real = os.path.realpath(path)
    return real if os.path.exists(real) else None


def read_os_release(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key] = value.strip().strip('"').strip("'")
    return values


def parse_interfaces(data: list) -> list:
    interfaces = []
    for link in data:
        addresses = []
        for info in link.get("addr_info", []):
            family = {"inet": "ipv4", "inet6": "ipv6"}.get(info.get("family"))
            if family is None or "local" not in info:
                continue
            lifetime = info.get("valid_life_time", FOREVER)
            addresses.append({
                "address": info["local"],
                "family": family,
                "prefix": int(info.get("prefixlen", 0)),
                "dynamic": bool(info.get("dynamic")) or lifetime != FOREVER,
                "link_local": info.get("scope") == "link",
            })
        interfaces.append({
            "name": link.get("ifname"),
            "mac": link.get("address"),
            "state": link.get("operstate"),
            "addresses": addresses,
        })
    return interfaces


def parse_dpkg_query(text: str, names: list) -> dict:
    found = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, status, version = parts
        name = name.split(":")[0]
        if status.split()[-1:] == ["installed"] and version:
            found[name] = version
    return {name: found.get(name) for name in names}


def parse_udev(text: str) -> dict:
    props = {}
    for line in text.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            props[key] = value
    return props


PRODUCT_UUID = "/sys/class/dmi/id/product_uuid"


def read_product_uuid(path: str = PRODUCT_UUID):
    """The firmware's system UUID, lower case, or None (no DMI, unreadable, or
    the all-zero and all-F placeholders of firmware that has none)."""
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip().lower()
    except (OSError, UnicodeDecodeError):
        return None
    if not text or set(text.replace("-", "")) <= {"0"} or set(text.replace("-", "")) <= {"f"}:
        return None
    return text


def swapped_uuid(text):
    """The same UUID with its first three fields byte-swapped: SMBIOS before 2.6
    left their byte order open, and a management controller may report the
    other order than the one the kernel prints. None for anything not a UUID."""
    parts = (text or "").split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        return None
    flip = ["".join(reversed([p[i:i + 2] for i in range(0, len(p), 2)])) for p in parts[:3]]
    return "-".join(flip + parts[3:])


def wwid_from_udev(props: dict):
    """The WWID multipath would use: scsi_id's identifier for SCSI disks, the
    map's WWID for a multipath device, the WWN for anything else that has one."""
    dm_uuid = props.get("DM_UUID", "")
    if dm_uuid.startswith("mpath-"):
        return dm_uuid[len("mpath-"):]
    if props.get("ID_BUS") == "scsi" and props.get("ID_SERIAL"):
        return props["ID_SERIAL"]
    return props.get("ID_WWN_WITH_EXTENSION") or props.get("ID_WWN") or None


def flatten_children(device: dict) -> tuple:
    names, mounts = [], []
    for child in device.get("children") or []:
        names.append(child.get("name"))
        mounts.extend(m for m in (child.get("mountpoints") or [child.get("mountpoint")]) if m)
        child_names, child_mounts = flatten_children(child)
        names.extend(child_names)
        mounts.extend(child_mounts)
    return names, mounts


class NodeInfo:
    def __init__(self, module: AnsibleModule):
        self.module = module

    def run(self, args: list, ok=(0,)):
        rc, out, err = self.module.run_command(args, environ_update={"LC_ALL": "C"})
        if rc not in ok:
            self.module.fail_json(msg=f"{' '.join(args)} failed with code {rc}: {err.strip()}")
        return rc, out

    def bin(self, name: str, required: bool = True):
        return self.module.get_bin_path(name, required=required)

    def os_facts(self) -> dict:
        with open(OS_RELEASE, encoding="utf-8") as handle:
            release = read_os_release(handle.read())
        dpkg = self.bin("dpkg", required=False)
        arch = self.run([dpkg, "--print-architecture"])[1].strip() if dpkg else platform.machine()
        return {
            "id": release.get("ID"),
            "version_id": release.get("VERSION_ID"),
            "codename": release.get("VERSION_CODENAME") or release.get("UBUNTU_CODENAME"),
            "architecture": arch,
            "kernel": platform.release(),
        }

    def packages(self, names: list) -> dict:
        if not names:
            return {}
        # dpkg-query exits 1 when one of the names is unknown, and still prints the others.
        out = self.run([self.bin("dpkg-query"), "-W", "-f", "${Package}\t${Status}\t${Version}\n"] + names,
                       ok=(0, 1))[1]
        return parse_dpkg_query(out, names)

    def interfaces(self) -> list:
        out = self.run([self.bin("ip"), "-j", "addr", "show"])[1]
        return parse_interfaces(json.loads(out or "[]"))

    def names(self) -> tuple:
        hostname = socket.gethostname().split(".")[0]
        tool = self.bin("hostname", required=False)
        fqdn = ""
        if tool:
            rc, out, dummy = self.module.run_command([tool, "--fqdn"])
            fqdn = out.strip() if rc == 0 else ""
        return hostname, fqdn or socket.getfqdn()

    def block_devices(self, extra: list) -> tuple:
        out = self.run([self.bin("lsblk"), "-J", "-b", "-p", "-o",
                        "NAME,KNAME,SIZE,TYPE,MOUNTPOINTS"])[1]
        devices = []
        blkid = self.bin("blkid")
        udevadm = self.bin("udevadm")
        for dev in json.loads(out or "{}").get("blockdevices", []):
            # Partitions and holders are reported as children of their disk.
            if dev.get("type") in ("loop", "rom"):
                continue
            path = dev.get("name")
            props = parse_udev(self.run([udevadm, "info", "--query=property", "--name", path], ok=(0, 1, 2, 4))[1])
            # -p probes the device itself (no cache), the same low-level view as wipefs.
            rc, probe = self.run([blkid, "-p", "-o", "export", path], ok=(0, 2, 8))
            sig = parse_udev(probe) if rc == 0 else {}
            children, mounts = flatten_children(dev)
            own = [m for m in (dev.get("mountpoints") or []) if m]
            devices.append({
                "path": path,
                "name": os.path.basename(dev.get("kname") or path),
                "size": int(dev.get("size") or 0),
                "type": dev.get("type"),
                "wwid": wwid_from_udev(props),
                # A disk's identity for bluemind_ha_format_confirm; bluemind-ha-drbd
                # reads the same properties (bluemind_ha_node.device_identity).
                "wwn": props.get("ID_WWN_WITH_EXTENSION") or props.get("ID_WWN") or None,
                "serial": props.get("ID_SERIAL_SHORT") or props.get("ID_SERIAL") or None,
                "signature": sig.get("TYPE") or sig.get("PTTYPE"),
                "label": sig.get("LABEL"),
                "children": children,
                "mountpoints": own + mounts,
                "aliases": [],
            })
        missing = []
        by_path = {d["path"]: d for d in devices}
        for path in extra:
            real = resolve_device(path)
            if real in by_path:
                by_path[real]["aliases"].append(path)
            else:
                missing.append(path)
        return devices, missing

    def time_synchronized(self):
        tool = self.bin("timedatectl", required=False)
        if not tool:
            return None
        rc, out, dummy = self.module.run_command([tool, "show", "-p", "NTPSynchronized", "--value"])
        if rc != 0:
            return None
        return out.strip() == "yes"

    def probe(self, addresses: list, interfaces: list, timeout: int) -> list:
        local = {a["address"] for i in interfaces for a in i["addresses"]}
        results = []
        ping = self.bin("ping")
        ip_tool = self.bin("ip")
        for address in addresses:
            entry = {"address": address, "answers": False, "mac": None, "local": address in local}
            if entry["local"]:
                entry["answers"] = True
                results.append(entry)
                continue
            family = "-6" if ipaddress.ip_address(address).version == 6 else "-4"
            # Forget what the neighbour cache remembers, so that only a fresh ARP or
            # ND answer counts. This touches a cache, not the node's configuration.
            self.module.run_command([ip_tool, family, "neigh", "flush", "to", address])
            rc, dummy, dummy2 = self.module.run_command([ping, family, "-n", "-c", "1", "-W", str(timeout), address])
            entry["answers"] = rc == 0
            rc, out, dummy = self.module.run_command([ip_tool, "-j", family, "neigh", "show", "to", address])
            for neigh in json.loads(out or "[]") if rc == 0 else []:
                states = set(neigh.get("state") or [])
                if neigh.get("lladdr") and states & REACHED_STATES:
                    entry["answers"] = True
                    entry["mac"] = neigh["lladdr"]
            results.append(entry)
        return results


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "devices": {"type": "list", "elements": "path", "default": []},
            "probe": {"type": "list", "elements": "str", "default": []},
            "probe_timeout": {"type": "int", "default": 1},
        },
        supports_check_mode=True,
    )
    for address in module.params["probe"]:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            module.fail_json(msg=f"probe: {address!r} is not an IP address without prefix; "
                                 "give a bare IPv4 or IPv6 address")
    info = NodeInfo(module)
    product_uuid = read_product_uuid(PRODUCT_UUID)
    interfaces = info.interfaces()
    hostname, fqdn = info.names()
    devices, missing = info.block_devices(module.params["devices"])
    node = {
        "os": info.os_facts(),
        "packages": info.packages(module.params["packages"]),
        "interfaces": interfaces,
        "hostname": hostname,
        "fqdn": fqdn,
        "block_devices": devices,
        "missing_devices": missing,
        "time_synchronized": info.time_synchronized(),
        "product_uuid": product_uuid,
        "product_uuid_swapped": swapped_uuid(product_uuid),
        "probes": info.probe(module.params["probe"], interfaces, module.params["probe_timeout"]),
    }
    module.exit_json(changed=False, ha_node=node)


if __name__ == "__main__":
    main()
