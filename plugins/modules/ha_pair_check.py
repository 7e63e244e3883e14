#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compare the facts of two nodes and list everything that keeps them from being an HA pair."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_pair_check
short_description: Prove that two hosts form a valid BlueMind HA pair
version_added: 0.1.0
description:
  - Runs on the controller. Compares the C(ha_node) reports that
    M(bluemind_ha.cluster.ha_node_info) gathered on the two nodes, against each other
    and against the inventory (floating IP, public interface, storage).
  - Never stops at the first problem. Returns every problem in RV(problems), each
    with a code, the host it concerns and a message that says how to fix it, and
    fails when the list is not empty. The failure message lists them all.
  - Every address computation uses netaddr, for IPv4 and IPv6 alike.
  - "Problem codes:"
  - C(node_count) - the pair does not have exactly two nodes.
  - C(os_mismatch) - the distributions, their versions or codenames differ.
  - C(arch_mismatch) - the package architectures differ.
  - C(package_mismatch) - a package of O(packages) has different versions (names both).
  - C(package_missing) - a package of O(packages) is installed on one node only.
  - C(interface_missing) - the public interface O(interface) does not exist on a node.
  - C(interface_down) - the public interface exists but is down.
  - C(address_invalid) - an address given in O(node_addresses) or O(replication_addresses) is not an IP address,
    or a node address is of no floating IP's family.
  - C(address_missing) - the node's public (or replication) address is not configured on it.
  - C(dynamic_address) - the node's address comes from DHCP or SLAAC (it has a lifetime).
  - C(duplicate_address) - both nodes have the same public or replication address.
  - C(subnet_mismatch) - the two nodes' addresses are not in one subnet.
  - C(vip_invalid) - O(vip) or O(vip6) is not an address with a prefix, or its prefix is that of a single
    address (/32, /128).
  - C(vip_outside_subnet) - the floating IP is outside the nodes' subnet.
  - C(vip_is_node_address) - the floating IP is one of the nodes' own addresses.
  - C(vip_reserved) - the floating IP is the network (or IPv4 broadcast) address of its subnet.
  - C(vip_in_use) - the floating IP answers while neither node holds it.
  - C(peer_unreachable) - a node does not reach the other on the public or replication address.
  - C(hostname_conflict) - both nodes have the same host name or FQDN.
  - C(fqdn_invalid) - a node's FQDN is not a valid fully qualified name of that host.
  - C(wwid_mismatch) - (SAN) a node does not see the LUN of O(san_wwid).
  - C(disk_missing) - (DRBD) a node's backing device of O(drbd_disks) does not exist.
  - C(disk_size_mismatch) - (DRBD) the backing devices differ in size by more than O(disk_size_tolerance).
  - C(disk_in_use) - the storage device holds a signature, partitions or mounts the collection did not create.
  - C(time_unsynchronized) - a node's clock is not synchronised.
author:
  - BlueMind HA collection maintainers (@bluemind-ha)
options:
  nodes:
    description:
      - Inventory name of each node mapped to the RV(bluemind_ha.cluster.ha_node_info#module:ha_node) it reported.
    type: dict
    required: true
  vip:
    description: The floating IP with its prefix, IPv4 or IPv6, for example C(192.168.60.100/24).
    type: str
    required: true
  vip6:
    description: A second floating IP of the other family, with its prefix (dual stack).
    type: str
  interface:
    description: Name of the public interface, where the floating IP lives.
    type: str
    required: true
  node_addresses:
    description:
      - Inventory name mapped to the node's own public address (no prefix).
      - When a node is not listed, its first static address of the floating IP's family
        on O(interface) is used.
    type: dict
    default: {}
  packages:
    description: Package names whose versions must be equal on both nodes.
    type: list
    elements: str
    default: []
  storage:
    description: The storage method whose facts to check.
    type: str
    choices: [drbd, san, none]
    default: none
  san_wwid:
    description:
      - (SAN) WWID of the shared LUN, as multipath shows it (C(36001405...)) or as C(naa.6001405...).
      - Leave unset while the nodes cannot see the LUN yet (iSCSI before login).
    type: str
  san_lun_expected:
    description:
      - (SAN) Whether both nodes must already see the LUN of O(san_wwid).
      - Set V(false) for iSCSI before the nodes have logged in; the WWID is then only
        compared when at least one node sees the LUN.
    type: bool
    default: true
  san_label:
    description:
      - Filesystem label the collection gives the HA filesystem. A device carrying a
        filesystem with this label is the collection's own, not foreign data.
    type: str
    default: bluemind_ha
  drbd_disks:
    description: (DRBD) Inventory name mapped to the node's backing device path.
    type: dict
    default: {}
  replication_addresses:
    description: (DRBD) Inventory name mapped to the node's replication address.
    type: dict
    default: {}
  disk_size_tolerance:
    description:
      - (DRBD) Largest accepted size difference between the backing devices, in percent
        of the larger one. DRBD uses the smaller size; the rest of the larger disk is wasted.
    type: float
    default: 1.0
  format_confirm:
    description:
      - The run's one-shot consent to erase a storage device that holds something the collection did not create
        (C(bluemind_ha_format_confirm)), as the device's identity, or several separated by commas. A DRBD backing
        device is named by its WWN or serial number, the SAN LUN by its WWID; a device name is never accepted.
      - A device it names is reported as a warning (it will be erased) instead of C(disk_in_use); a device it
        does not name stays C(disk_in_use), and the message says what would name it.
    type: str
  ignore:
    description:
      - Problem codes to report as warnings instead of failing. A last resort for a known
        and accepted deviation, for example C(time_unsynchronized) in an isolated test network.
      - A name that is not one of the problem codes above fails the check (a typo would
        otherwise silently ignore nothing); the preflight role passes C(preflight_ignore) here.
    type: list
    elements: str
    default: []
attributes:
  check_mode:
    support: full
    description: The module only compares data it is given.
  diff_mode:
    support: none
    description: Nothing changes.
requirements:
  - netaddr (on the controller)
seealso:
  - module: bluemind_ha.cluster.ha_node_info
"""

EXAMPLES = r"""
- name: Check the pair once, on the controller
  bluemind_ha.cluster.ha_pair_check:
    nodes: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, ['node_info', 'ha_node']))) }}"
    vip: 192.168.60.100/24
    interface: eth1
    node_addresses: {node1: 192.168.60.11, node2: 192.168.60.12}
    packages: [keepalived, bm-core]
    storage: drbd
    drbd_disks: {node1: /dev/sdb, node2: /dev/sdb}
    replication_addresses: {node1: 10.60.0.11, node2: 10.60.0.12}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
problems:
  description: Every problem found, in a stable order. Empty when the pair is valid.
  returned: always
  type: list
  elements: dict
  contains:
    code:
      description: One of the codes listed in the description.
      type: str
    host:
      description: The inventory name of the node to fix, or C(pair) when the problem is between the two.
      type: str
    message:
      description: What is wrong and how to fix it.
      type: str
  sample:
    - code: package_mismatch
      host: pair
      message: "package keepalived is 1:2.2.7-1 on node1 but 1:2.2.8-1 on node2; install the same version on both"
warnings_found:
  description: Problems downgraded by O(ignore), and doubts that are not errors (unknown clock state, kernels that differ).
  returned: always
  type: list
  elements: dict
pair:
  description: What the checks derived, for the roles that follow.
  returned: always
  type: dict
  contains:
    addresses:
      description: Inventory name mapped to the node's public address.
      type: dict
    addresses_by_family:
      description: >-
        C(ipv4) and C(ipv6), each mapping inventory name to the node's public address of
        that family, for the families of the floating IPs (keepalived's unicast peers).
      type: dict
    network:
      description: The nodes' public subnet in CIDR form, V(null) when the nodes disagree.
      type: str
    vips:
      description: The floating IPs, each with C(address), C(prefix), C(family) and C(network).
      type: list
      elements: dict
    holder:
      description: The node that holds the floating IP now, V(null) when none does.
      type: str
  sample:
    addresses: {node1: 192.168.60.11, node2: 192.168.60.12}
    addresses_by_family:
      ipv4: {node1: 192.168.60.11, node2: 192.168.60.12}
      ipv6: {node1: "fd00:60::11", node2: "fd00:60::12"}
    network: 192.168.60.0/24
    vips: [{address: 192.168.60.100, prefix: 24, family: ipv4, network: 192.168.60.0/24}]
    holder: null
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import netaddr
except ImportError:
    HAS_NETADDR = False
else:
    HAS_NETADDR = True

LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def family_of(ip) -> str:
    return "ipv4" if ip.version == 4 else "ipv6"


def bare(value) -> str:
    """An address without its prefix."""
    return str(value).split("/", maxsplit=1)[0]


def normal_wwid(value) -> str:
    """One spelling for a WWID: lower case, without the naa./0x prefixes and
    without the leading 3 (the NAA designator type) scsi_id puts in front."""
    text = str(value or "").strip().lower()
    for prefix in ("naa.", "0x", "wwn-0x"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if len(text) in (17, 33) and text.startswith("3"):
        text = text[1:]
    return text


# Every code add() reports, in the order of the documentation's list.
CODES = (
    "node_count",
    "os_mismatch",
    "arch_mismatch",
    "package_mismatch",
    "package_missing",
    "interface_missing",
    "interface_down",
    "address_invalid",
    "address_missing",
    "dynamic_address",
    "duplicate_address",
    "subnet_mismatch",
    "vip_invalid",
    "vip_outside_subnet",
    "vip_is_node_address",
    "vip_reserved",
    "vip_in_use",
    "peer_unreachable",
    "hostname_conflict",
    "fqdn_invalid",
    "wwid_mismatch",
    "disk_missing",
    "disk_size_mismatch",
    "disk_in_use",
    "time_unsynchronized",
)


class PairCheck:
    def __init__(self, params: dict):
        self.p = params
        self.nodes = params["nodes"]
        self.names = list(self.nodes)
        self.ignore = set(params["ignore"])
        self.problems = []
        self.warnings = []
        self.addresses = {}
        self.addresses_by_family = {"ipv4": {}, "ipv6": {}}
        self.networks = {}
        self.vips = []
        self.holder = None

    def add(self, code: str, host: str, message: str):
        entry = {"code": code, "host": host, "message": message}
        (self.warnings if code in self.ignore else self.problems).append(entry)

    def warn(self, host: str, message: str):
        self.warnings.append({"code": "warning", "host": host, "message": message})

    # ----------------------------------------------------------------- helpers
    def interfaces(self, name: str) -> list:
        return self.nodes[name].get("interfaces") or []

    def iface(self, name: str, ifname: str):
        for entry in self.interfaces(name):
            if entry.get("name") == ifname:
                return entry
        return None

    def find_address(self, name: str, ip):
        """(interface name, address entry) of ip on the node, or (None, None)."""
        for entry in self.interfaces(name):
            for addr in entry.get("addresses") or []:
                try:
                    if netaddr.IPAddress(addr["address"]) == ip:
                        return entry.get("name"), addr
                except (netaddr.AddrFormatError, ValueError, KeyError):
                    continue
        return None, None

    def vip_ips(self) -> set:
        return {v["ip"] for v in self.vips}

    def macs(self) -> set:
        return {str(i.get("mac") or "").lower() for n in self.names for i in self.interfaces(n)} - {""}

    # ------------------------------------------------------------------ checks
    def check_count(self) -> bool:
        if len(self.names) != 2:
            self.add("node_count", "pair",
                     f"the pair has {len(self.names)} node(s) ({', '.join(self.names) or 'none'}); "
                     "put exactly two hosts in the inventory group bluemind_ha")
            return False
        return True

    def check_os(self):
        first, second = self.names
        os1, os2 = (self.nodes[n].get("os") or {} for n in self.names)
        keys = ("id", "version_id", "codename")
        if any(os1.get(k) != os2.get(k) for k in keys):
            def show(facts):
                return " ".join(str(facts.get(k)) for k in keys)
            self.add("os_mismatch", "pair",
                     f"{first} runs {show(os1)} but {second} runs {show(os2)}; "
                     "install the same distribution and release on both nodes")
        if os1.get("architecture") != os2.get("architecture"):
            self.add("arch_mismatch", "pair",
                     f"{first} is {os1.get('architecture')} but {second} is {os2.get('architecture')}; "
                     "both nodes must have the same architecture")
        if os1.get("kernel") != os2.get("kernel"):
            self.warn("pair", f"kernels differ: {first} runs {os1.get('kernel')}, {second} runs {os2.get('kernel')}; "
                              "reboot both on the same kernel when convenient (DRBD's module follows the kernel)")

    def check_packages(self):
        first, second = self.names
        for package in self.p["packages"]:
            v1 = (self.nodes[first].get("packages") or {}).get(package)
            v2 = (self.nodes[second].get("packages") or {}).get(package)
            if v1 == v2:
                continue
            if v1 is None or v2 is None:
                missing, present, version = (first, second, v2) if v1 is None else (second, first, v1)
                self.add("package_missing", missing,
                         f"package {package} is {version} on {present} but not installed on {missing}; "
                         f"install {package}={version} on {missing} (or remove it from {present})")
            else:
                self.add("package_mismatch", "pair",
                         f"package {package} is {v1} on {first} but {v2} on {second}; "
                         "install the same version on both nodes")

    def parse_vips(self):
        for option in ("vip", "vip6"):
            value = self.p.get(option)
            if not value:
                continue
            try:
                if "/" not in value:
                    raise ValueError("no prefix")
                net = netaddr.IPNetwork(value)
            except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
                self.add("vip_invalid", "pair",
                         f"{option} {value!r} is not an address with a prefix ({exc}); "
                         "write it as address/prefix, for example 192.168.1.100/24 or 2001:db8::100/64")
                continue
            if any(v["ip"].version == net.version for v in self.vips):
                self.add("vip_invalid", "pair",
                         f"vip and vip6 are both IPv{net.version}; vip6 is for the other family")
                continue
            if net.prefixlen == net.ip.netmask_bits():
                # Kept for the other checks: the address itself may be fine.
                self.add("vip_invalid", "pair",
                         f"{option} {value} has the prefix of a single address; write it with the prefix of the "
                         f"nodes' subnet (keepalived adds it to the interface with that prefix), for example "
                         f"{net.ip}/{24 if net.version == 4 else 64}")
            self.vips.append({"option": option, "ip": net.ip, "net": net})

    def node_address(self, name: str, family: int, given):
        """The node's own public address of one family: (ip, entry) or (None, None)."""
        ifname = self.p["interface"]
        if given:
            ip = netaddr.IPAddress(bare(given))
            if ip.version != family:
                given = None
        if given:
            where, entry = self.find_address(name, ip)
            if entry is None:
                self.add("address_missing", name,
                         f"{ip} (bluemind_ha_address) is not configured on {name}; "
                         f"configure it as a static address on {ifname} or correct the inventory")
                return None, None
            if where != ifname:
                self.add("address_missing", name,
                         f"{ip} is on {where} of {name}, not on the public interface {ifname}; "
                         "set bluemind_ha_interface to the interface that carries it")
                return None, None
            return ip, entry
        iface = self.iface(name, ifname) or {}
        candidates = [(netaddr.IPAddress(e["address"]), e) for e in iface.get("addresses") or []
                      if not e.get("link_local")]
        candidates = [(ip, e) for ip, e in candidates if ip.version == family]
        # The node's own address, not the floating IP it may hold; a static address
        # wins over a SLAAC one on the same interface.
        vips = self.vip_ips()
        for ip, entry in sorted(candidates, key=lambda c: (c[0] in vips, bool(c[1].get("dynamic")))):
            return ip, entry
        self.add("address_missing", name,
                 f"{name} has no IPv{family} address on {ifname}; configure a static address there "
                 "(the floating IP must share its subnet)")
        return None, None

    def check_public(self):
        ifname = self.p["interface"]
        present = []
        for name in self.names:
            iface = self.iface(name, ifname)
            if iface is None:
                have = ", ".join(i.get("name") for i in self.interfaces(name) if i.get("name") != "lo")
                self.add("interface_missing", name,
                         f"{name} has no interface {ifname} (it has {have}); set bluemind_ha_interface "
                         "to the interface of the public network")
                continue
            if str(iface.get("state")).upper() == "DOWN":
                self.add("interface_down", name, f"{ifname} is down on {name}; bring it up (ip link set {ifname} up) "
                                                 "and make it come up at boot")
            present.append(name)
        given_addresses = {}
        for name in present:
            given = self.p["node_addresses"].get(name)
            if given:
                try:
                    netaddr.IPAddress(bare(given))
                except (netaddr.AddrFormatError, ValueError):
                    self.add("address_invalid", name,
                             f"bluemind_ha_address {given!r} is not an IP address; "
                             "give the node's fixed public address")
                    continue
            given_addresses[name] = given
        families = [v["ip"].version for v in self.vips] or [4]
        # Only when every floating IP given was understood (vip_invalid says the rest).
        every_vip = len(self.vips) == len([o for o in ("vip", "vip6") if self.p.get(o)])
        for name, given in given_addresses.items():
            if every_vip and given and netaddr.IPAddress(bare(given)).version not in families:
                self.add("address_invalid", name,
                         f"bluemind_ha_address {given} is IPv{netaddr.IPAddress(bare(given)).version} but no floating "
                         f"IP is; give {name}'s IPv{families[0]} address on the floating IP's subnet (or add a "
                         "floating IP of that family for dual stack)")
        for family in families:
            vip = next((v for v in self.vips if v["ip"].version == family), None)
            found = {}
            for name, given in given_addresses.items():
                ip, entry = self.node_address(name, family, given)
                if ip is None:
                    continue
                if entry.get("dynamic"):
                    self.add("dynamic_address", name,
                             f"{ip}/{entry.get('prefix')} on {name} is dynamic (DHCP or SLAAC, it has a lifetime); "
                             "an HA node needs a fixed address: configure it statically")
                found[name] = netaddr.IPNetwork(f"{ip}/{entry.get('prefix')}")
            self.addresses_by_family["ipv4" if family == 4 else "ipv6"] = {n: str(net.ip) for n, net in found.items()}
            if family == families[0]:
                self.addresses = {n: str(net.ip) for n, net in found.items()}
            self.check_subnet(found, "public" if family == families[0] else f"public IPv{family}", vip)

    def check_subnet(self, found: dict, what: str, vip=None):
        if len(found) == 2:
            (n1, a1), (n2, a2) = list(found.items())
            if a1.ip == a2.ip:
                self.add("duplicate_address", "pair",
                         f"{n1} and {n2} both have the {what} address {a1.ip}; give each node its own address")
            elif a1.cidr != a2.cidr:
                self.add("subnet_mismatch", "pair",
                         f"the {what} addresses are in different subnets: {n1} {a1} ({a1.cidr}), "
                         f"{n2} {a2} ({a2.cidr}); put both nodes in one subnet with the same prefix")
            else:
                self.networks[what] = a1.cidr
        if vip is None:
            return
        ip, net = vip["ip"], vip["net"]
        for name, addr in found.items():
            if ip == addr.ip:
                self.add("vip_is_node_address", name,
                         f"the floating IP {ip} is {name}'s own {what} address; choose a free address of the subnet")
                continue
            if ip not in addr.cidr:
                self.add("vip_outside_subnet", name,
                         f"the floating IP {ip} is outside {name}'s subnet {addr.cidr} on {self.p['interface']}; "
                         f"choose a free address inside {addr.cidr}")
            elif net.prefixlen != addr.prefixlen:
                self.warn(name, f"the floating IP's prefix /{net.prefixlen} differs from {name}'s /{addr.prefixlen}")
        reserved = net.prefixlen < ip.netmask_bits() and (
            ip == net.network or (ip.version == 4 and net.prefixlen < 31 and ip == net.broadcast))
        if reserved:
            kind = "network" if ip == net.network else "broadcast"
            self.add("vip_reserved", "pair",
                     f"the floating IP {ip} is the {kind} address of {net.cidr}; choose a host address")
        for name, value in self.p["replication_addresses"].items():
            if bare(value) == str(ip):
                self.add("vip_is_node_address", name,
                         f"the floating IP {ip} is {name}'s replication address; choose another floating IP")

    def check_vip_in_use(self):
        vip_ips = self.vip_ips()
        for name in self.names:
            for entry in self.interfaces(name):
                for addr in entry.get("addresses") or []:
                    try:
                        if netaddr.IPAddress(addr["address"]) in vip_ips:
                            self.holder = name
                    except (netaddr.AddrFormatError, ValueError, KeyError):
                        continue
        own_macs = self.macs()
        # A floating IP outside the subnet is already a problem; whatever answers
        # for it through a router says nothing about the public segment.
        inside = {v["ip"] for v in self.vips
                  if any(v["ip"] in net for what, net in self.networks.items() if what.startswith("public"))}
        for ip in sorted(inside):
            seen_by, macs = [], set()
            for name in self.names:
                for probe in self.nodes[name].get("probes") or []:
                    try:
                        if netaddr.IPAddress(probe["address"]) != ip:
                            continue
                    except (netaddr.AddrFormatError, ValueError, KeyError):
                        continue
                    if probe.get("local") or not probe.get("answers"):
                        continue
                    mac = str(probe.get("mac") or "").lower()
                    if self.holder and (not mac or mac in own_macs):
                        continue
                    seen_by.append(name)
                    if mac:
                        macs.add(mac)
            if seen_by:
                self.add("vip_in_use", "pair",
                         f"the floating IP {ip} already answers{' from ' + ', '.join(sorted(macs)) if macs else ''} "
                         f"(seen from {', '.join(seen_by)}) while neither node holds it; "
                         "find that host and free the address, or choose another floating IP")

    def check_reachability(self):
        first, second = self.names
        targets = {first: {}, second: {}}
        for name, ip in self.addresses.items():
            targets[name]["public"] = ip
        for name, value in self.p["replication_addresses"].items():
            targets.setdefault(name, {})["replication"] = bare(value)
        for src, dst in ((first, second), (second, first)):
            probes = {p.get("address"): p for p in self.nodes[src].get("probes") or []}
            for what, address in targets.get(dst, {}).items():
                probe = probes.get(address)
                if probe is not None and not probe.get("answers"):
                    self.add("peer_unreachable", src,
                             f"{src} does not reach {dst} at its {what} address {address}; "
                             "check cabling, VLANs and firewalls between the nodes")

    def check_names(self):
        first, second = self.names
        h1, h2 = (str(self.nodes[n].get("hostname") or "") for n in self.names)
        f1, f2 = (str(self.nodes[n].get("fqdn") or "") for n in self.names)
        if h1.lower() == h2.lower() or (f1 and f1.lower() == f2.lower()):
            self.add("hostname_conflict", "pair",
                     f"{first} and {second} are both named {h1 if h1.lower() == h2.lower() else f1}; "
                     "give each node its own host name (hostnamectl set-hostname)")
        for name in self.names:
            host = str(self.nodes[name].get("hostname") or "")
            fqdn = str(self.nodes[name].get("fqdn") or "")
            labels = fqdn.rstrip(".").split(".")
            reason = None
            if len(labels) < 2:
                reason = "has no domain"
            elif labels[0].lower() == "localhost" or fqdn.lower().startswith("localhost"):
                reason = "resolves to localhost"
            elif len(fqdn) > 253 or not all(LABEL.match(label) for label in labels):
                reason = "is not a valid DNS name"
            elif labels[0].lower() != host.lower():
                reason = f"does not start with the host name {host}"
            if reason:
                self.add("fqdn_invalid", name,
                         f"{name}'s FQDN {fqdn!r} {reason}; make `hostname --fqdn` return host.domain "
                         "(a line 'address fqdn short' in /etc/hosts, or DNS)")

    def device(self, name: str, path: str):
        for dev in self.nodes[name].get("block_devices") or []:
            if dev.get("path") == path or path in (dev.get("aliases") or []):
                return dev
        return None

    def foreign(self, dev: dict, own_children_prefix=None) -> str:
        """What on the device the collection did not create, or an empty string."""
        sig = dev.get("signature")
        if sig and sig != "drbd" and dev.get("label") != self.p["san_label"]:
            label = f" labelled {dev.get('label')}" if dev.get("label") else ""
            return f"a {sig} signature{label}"
        if own_children_prefix is not None:
            others = [c for c in dev.get("children") or [] if not os.path.basename(str(c)).startswith(own_children_prefix)]
            if others:
                return f"partitions or holders {', '.join(map(str, others))}"
            if dev.get("mountpoints") and not (dev.get("children") or []):
                return f"mounts {', '.join(dev['mountpoints'])}"
        return ""

    def check_drbd(self):
        sizes = {}
        for name in self.names:
            path = self.p["drbd_disks"].get(name)
            if not path:
                self.add("disk_missing", name,
                         f"no DRBD backing device is set for {name}; set bluemind_ha_drbd_disk in its host_vars")
                continue
            dev = self.device(name, path)
            if dev is None:
                self.add("disk_missing", name,
                         f"{path} does not exist on {name}; attach the disk or correct bluemind_ha_drbd_disk "
                         "(a /dev/disk/by-id/ path survives reboots)")
                continue
            sizes[name] = int(dev.get("size") or 0)
            what = self.foreign(dev, own_children_prefix="drbd")
            if what:
                names = [n for n in (dev.get("wwn"), dev.get("serial")) if n]
                if self.confirmed(names):
                    self.warn(name, f"{path} ({dev.get('path')}) on {name} holds {what}; bluemind_ha_format_confirm "
                                    "names it: the drbd role erases it in this run")
                    continue
                self.add("disk_in_use", name,
                         f"{path} ({dev.get('path')}) on {name} holds {what}, which this collection did not create; "
                         + (f"if its data is not needed, run once with -e bluemind_ha_format_confirm={names[0]} "
                            f"(its {'WWN' if dev.get('wwn') else 'serial number'}; it will be erased)"
                            if names else f"if its data is not needed, erase it with `wipefs -a {dev.get('path')}` "
                                          "(it has no WWN or serial number a confirmation could name)")
                         + ", else choose another disk"
                         + (f" (bluemind_ha_format_confirm={self.p['format_confirm']} does not name it)"
                            if self.p.get("format_confirm") else ""))
        if len(sizes) == 2:
            (n1, s1), (n2, s2) = list(sizes.items())
            largest = max(s1, s2)
            if largest and abs(s1 - s2) * 100.0 / largest > self.p["disk_size_tolerance"]:
                self.add("disk_size_mismatch", "pair",
                         f"the DRBD backing devices differ: {n1} {s1} bytes, {n2} {s2} bytes "
                         f"(more than {self.p['disk_size_tolerance']}%); DRBD would use the smaller one, "
                         "give both nodes disks of the same size")
        found = {}
        for name in self.names:
            value = self.p["replication_addresses"].get(name)
            if not value:
                self.add("address_missing", name,
                         f"no replication address is set for {name}; set bluemind_ha_replication_address")
                continue
            try:
                ip = netaddr.IPAddress(bare(value))
            except (netaddr.AddrFormatError, ValueError):
                self.add("address_invalid", name,
                         f"bluemind_ha_replication_address {value!r} is not an IP address")
                continue
            where, entry = self.find_address(name, ip)
            if entry is None:
                self.add("address_missing", name,
                         f"the replication address {ip} is not configured on {name}; "
                         "configure it statically on the replication interface")
                continue
            if entry.get("dynamic"):
                self.add("dynamic_address", name,
                         f"the replication address {ip} on {where} of {name} is dynamic; configure it statically")
            found[name] = netaddr.IPNetwork(f"{ip}/{entry.get('prefix')}")
        self.check_subnet(found, "replication")
        public = self.networks.get("public")
        if public is not None and self.networks.get("replication") == public:
            self.warn("pair", "replication runs over the public subnet; a dedicated link keeps "
                              "DRBD traffic from competing with users")

    def check_san(self):
        wanted = normal_wwid(self.p.get("san_wwid"))
        if not wanted:
            return
        seen_by = [n for n in self.names
                   if any(normal_wwid(d.get("wwid")) == wanted for d in self.nodes[n].get("block_devices") or [])]
        if not seen_by and not self.p["san_lun_expected"]:
            return
        for name in self.names:
            devices = self.nodes[name].get("block_devices") or []
            matches = [d for d in devices if normal_wwid(d.get("wwid")) == wanted]
            if not matches:
                seen = sorted({str(d.get("wwid")) for d in devices if d.get("wwid")})
                self.add("wwid_mismatch", name,
                         f"{name} sees no device with WWID {self.p['san_wwid']} (it sees {', '.join(seen) or 'none'}); "
                         "check zoning, LUN masking and bluemind_ha_san_wwid")
                continue
            for dev in matches:
                what = self.foreign(dev)
                if what and any(normal_wwid(c) == wanted for c in (self.p.get("format_confirm") or "").split(",")):
                    self.warn(name, f"the LUN {self.p['san_wwid']} ({dev.get('path')} on {name}) holds {what}; "
                                    "bluemind_ha_format_confirm names it: the san role formats it in this run "
                                    "unless a node holds its reservation")
                    break
                if what:
                    self.add("disk_in_use", name,
                             f"the LUN {self.p['san_wwid']} ({dev.get('path')} on {name}) holds {what}, which this "
                             "collection did not create; if its data is not needed, run once with "
                             f"-e bluemind_ha_format_confirm={self.p['san_wwid']} (it will be erased)")
                    break

    def confirmed(self, names) -> bool:
        """Whether the run's one-shot format_confirm names one of a device's
        identities (case-insensitive; a comma-separated list names several)."""
        given = [c.strip().lower() for c in (self.p.get("format_confirm") or "").split(",") if c.strip()]
        return any(str(n).lower() in given for n in names if n)

    def check_time(self):
        for name in self.names:
            state = self.nodes[name].get("time_synchronized")
            if state is False:
                self.add("time_unsynchronized", name,
                         f"{name}'s clock is not synchronised; install and configure chrony (or systemd-timesyncd) "
                         "with your NTP servers and wait until `timedatectl` says synchronized")
            elif state is None:
                self.warn(name, f"cannot tell whether {name}'s clock is synchronised (no timedatectl)")

    def run(self):
        self.parse_vips()
        if not self.check_count():
            return
        self.check_os()
        self.check_packages()
        self.check_public()
        self.check_vip_in_use()
        self.check_names()
        if self.p["storage"] == "drbd":
            self.check_drbd()
        elif self.p["storage"] == "san":
            self.check_san()
        self.check_reachability()
        self.check_time()

    def result(self) -> dict:
        return {
            "problems": self.problems,
            "warnings_found": self.warnings,
            "pair": {
                "addresses": self.addresses,
                "addresses_by_family": self.addresses_by_family,
                "network": str(self.networks["public"]) if "public" in self.networks else None,
                "vips": [{"address": str(v["ip"]), "prefix": v["net"].prefixlen, "family": family_of(v["ip"]),
                          "network": str(v["net"].cidr)} for v in self.vips],
                "holder": self.holder,
            },
        }


def main():
    module = AnsibleModule(
        argument_spec={
            "nodes": {"type": "dict", "required": True},
            "vip": {"type": "str", "required": True},
            "vip6": {"type": "str"},
            "interface": {"type": "str", "required": True},
            "node_addresses": {"type": "dict", "default": {}},
            "packages": {"type": "list", "elements": "str", "default": []},
            "storage": {"type": "str", "choices": ["drbd", "san", "none"], "default": "none"},
            "san_wwid": {"type": "str"},
            "san_lun_expected": {"type": "bool", "default": True},
            "san_label": {"type": "str", "default": "bluemind_ha"},
            "drbd_disks": {"type": "dict", "default": {}},
            "replication_addresses": {"type": "dict", "default": {}},
            "disk_size_tolerance": {"type": "float", "default": 1.0},
            "format_confirm": {"type": "str"},
            "ignore": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    if not HAS_NETADDR:
        module.fail_json(msg=missing_required_lib("netaddr"))
    unknown = sorted(set(module.params["ignore"]) - set(CODES))
    if unknown:
        module.fail_json(msg=f"ignore (the variable preflight_ignore) names {', '.join(unknown)}, which no check "
                             f"reports; use the problem codes of docs/preflight.md: {', '.join(CODES)}")
    check = PairCheck(module.params)
    check.run()
    result = check.result()
    for warning in result["warnings_found"]:
        module.warn(f"[{warning['code']}] {warning['host']}: {warning['message']}")
    if check.problems:
        lines = [f"- [{p['code']}] {p['host']}: {p['message']}" for p in check.problems]
        module.fail_json(msg=f"the two hosts do not form a valid HA pair; {len(lines)} problem(s) to fix "
                             "before anything is changed:\n" + "\n".join(lines), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
