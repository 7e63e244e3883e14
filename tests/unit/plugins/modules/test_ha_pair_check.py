"""ha_pair_check driven by data: a valid pair (IPv4 and IPv6, DRBD and SAN) that must
pass, and one case per problem code, each a change to the valid pair and the codes
it must produce. Every case also checks that no other problem was reported."""
import copy
from pathlib import Path
import re

import pytest

from ansible_collections.bluemind_ha.cluster.plugins.modules import ha_pair_check

WWID = "360014056c1d4e2a1b2c4d5e8f90a1b2c"
GIB = 1 << 30


def address(addr, prefix, dynamic=False, link_local=False):
    return {"address": addr, "family": "ipv6" if ":" in addr else "ipv4", "prefix": prefix,
            "dynamic": dynamic, "link_local": link_local}


def node(number: int) -> dict:
    """What ha_node_info reports on a healthy lab node."""
    return {
        "os": {"id": "debian", "version_id": "12", "codename": "bookworm", "architecture": "amd64",
               "kernel": "6.1.0-56-cloud-amd64"},
        "packages": {"keepalived": "1:2.2.7-1+b2", "drbd-utils": "9.22.0-1", "bm-core": None},
        "interfaces": [
            {"name": "lo", "mac": "00:00:00:00:00:00", "state": "UNKNOWN", "addresses": [address("127.0.0.1", 8)]},
            {"name": "eth0", "mac": f"52:54:00:00:00:{number}0", "state": "UP",
             "addresses": [address("10.0.2.15", 24, dynamic=True)]},
            {"name": "eth1", "mac": f"52:54:00:00:00:{number}1", "state": "UP",
             "addresses": [address(f"192.168.60.1{number}", 24), address(f"fd00:60::1{number}", 64),
                           address(f"fe80::1{number}", 64, link_local=True)]},
            {"name": "eth2", "mac": f"52:54:00:00:00:{number}2", "state": "UP",
             "addresses": [address(f"10.60.0.1{number}", 24)]},
        ],
        "hostname": f"node{number}",
        "fqdn": f"node{number}.lab.test",
        "block_devices": [
            {"path": "/dev/vda", "name": "vda", "size": 6 * GIB, "type": "disk", "wwid": None, "signature": "ext4",
             "label": "labroot", "children": [], "mountpoints": ["/"], "aliases": []},
            {"path": "/dev/vdb", "name": "vdb", "size": 2 * GIB, "type": "disk", "wwid": None, "signature": None,
             "label": None, "children": [], "mountpoints": [], "aliases": ["/dev/disk/by-id/virtio-drbd"]},
            {"path": "/dev/sda", "name": "sda", "size": 2 * GIB, "type": "disk", "wwid": WWID, "signature": None,
             "label": None, "children": [], "mountpoints": [], "aliases": []},
        ],
        "missing_devices": [],
        "time_synchronized": True,
        "probes": [
            {"address": "192.168.60.100", "answers": False, "mac": None, "local": False},
            {"address": "fd00:60::100", "answers": False, "mac": None, "local": False},
            {"address": f"192.168.60.1{3 - number}", "answers": True, "mac": None, "local": False},
            {"address": f"10.60.0.1{3 - number}", "answers": True, "mac": None, "local": False},
        ],
    }


def pair_args(storage="drbd") -> dict:
    args = {
        "nodes": {"node1": node(1), "node2": node(2)},
        "vip": "192.168.60.100/24",
        "vip6": "fd00:60::100/64",
        "interface": "eth1",
        "node_addresses": {"node1": "192.168.60.11", "node2": "192.168.60.12"},
        "packages": ["keepalived", "drbd-utils", "bm-core"],
        "storage": storage,
    }
    if storage == "drbd":
        args["drbd_disks"] = {"node1": "/dev/disk/by-id/virtio-drbd", "node2": "/dev/vdb"}
        args["replication_addresses"] = {"node1": "10.60.0.11", "node2": "10.60.0.12"}
    else:
        args["san_wwid"] = "naa.60014056c1d4e2a1b2c4d5e8f90a1b2c"
    return args


def iface(args, host, name="eth1"):
    return next(i for i in args["nodes"][host]["interfaces"] if i["name"] == name)


def addr(args, host, value, name="eth1"):
    return next(a for a in iface(args, host, name)["addresses"] if a["address"] == value)


def disk(args, host, path):
    return next(d for d in args["nodes"][host]["block_devices"] if d["path"] == path)


def probe(args, host, value):
    return next(p for p in args["nodes"][host]["probes"] if p["address"] == value)


def run(run_module, args):
    failed, result, warnings = run_module(ha_pair_check, args)
    return failed, result, warnings


# --------------------------------------------------------------------- valid pairs

@pytest.mark.parametrize("storage", ["drbd", "san"])
def test_valid_pair_passes(run_module, storage):
    failed, result, warnings = run(run_module, pair_args(storage))
    assert not failed, result["msg"]
    assert result["problems"] == [] and result["changed"] is False
    assert result["pair"]["addresses"] == {"node1": "192.168.60.11", "node2": "192.168.60.12"}
    assert result["pair"]["network"] == "192.168.60.0/24"
    assert result["pair"]["addresses_by_family"] == {
        "ipv4": {"node1": "192.168.60.11", "node2": "192.168.60.12"},
        "ipv6": {"node1": "fd00:60::11", "node2": "fd00:60::12"}}
    assert result["pair"]["vips"] == [
        {"address": "192.168.60.100", "prefix": 24, "family": "ipv4", "network": "192.168.60.0/24"},
        {"address": "fd00:60::100", "prefix": 64, "family": "ipv6", "network": "fd00:60::/64"},
    ]
    assert result["pair"]["holder"] is None


def test_ipv6_only_pair_passes(run_module):
    args = pair_args()
    args["vip"] = args.pop("vip6")
    args["node_addresses"] = {"node1": "fd00:60::11", "node2": "fd00:60::12"}
    failed, result, dummy = run(run_module, args)
    assert not failed, result["msg"]
    assert result["pair"]["addresses"] == {"node1": "fd00:60::11", "node2": "fd00:60::12"}


def test_addresses_are_found_without_inventory_addresses(run_module):
    args = pair_args()
    args["node_addresses"] = {}
    # A SLAAC address next to the static one must not be taken for the node's address.
    iface(args, "node1")["addresses"].insert(0, address("fd00:60::5054:ff:fe00:11", 64, dynamic=True))
    failed, result, dummy = run(run_module, args)
    assert not failed, result["msg"]
    assert result["pair"]["addresses"] == {"node1": "192.168.60.11", "node2": "192.168.60.12"}


def test_rerun_on_a_deployed_pair_passes(run_module):
    """Once deployed, the active node holds the floating IP, the DRBD disk carries
    metadata and the HA filesystem, and the peer answers for the floating IP:
    all the collection's own doing, not problems."""
    args = pair_args()
    iface(args, "node1")["addresses"] += [address("192.168.60.100", 24), address("fd00:60::100", 64)]
    for host in ("node1", "node2"):
        disk(args, host, "/dev/vdb").update(signature="drbd", children=["/dev/drbd0"])
    disk(args, "node1", "/dev/vdb")["mountpoints"] = ["/srv/bluemind"]
    p = probe(args, "node2", "192.168.60.100")
    p.update(answers=True, mac="52:54:00:00:00:11")
    for host in ("node1", "node2"):
        args["nodes"][host]["packages"]["bm-core"] = "5.1.12345"
    failed, result, dummy = run(run_module, args)
    assert not failed, result["msg"]
    assert result["pair"]["holder"] == "node1"
    assert result["pair"]["addresses"] == {"node1": "192.168.60.11", "node2": "192.168.60.12"}


def test_san_lun_with_the_collections_filesystem_passes(run_module):
    args = pair_args("san")
    for host in ("node1", "node2"):
        disk(args, host, "/dev/sda").update(signature="xfs", label="bluemind_ha")
    failed, result, dummy = run(run_module, args)
    assert not failed, result["msg"]


# ------------------------------------------------------------- one case per code

def set_os(args, host, **values):
    args["nodes"][host]["os"].update(values)


def drop_host(args):
    del args["nodes"]["node2"]


def add_host(args):
    args["nodes"]["node3"] = node(3)


def dynamic(host, value, name="eth1"):
    def change(args):
        addr(args, host, value, name)["dynamic"] = True
    return change


def move_address(args):
    """node2's public address becomes 192.168.61.12/24."""
    addr(args, "node2", "192.168.60.12").update(address="192.168.61.12")
    args["node_addresses"]["node2"] = "192.168.61.12"


def move_address6(args):
    addr(args, "node2", "fd00:60::12").update(address="fd00:61::12")
    args["node_addresses"] = {"node1": "fd00:60::11", "node2": "fd00:61::12"}
    args["vip"] = args.pop("vip6")


def same_address(args):
    addr(args, "node2", "192.168.60.12").update(address="192.168.60.11")
    args["node_addresses"]["node2"] = "192.168.60.11"


def same_address6(args):
    addr(args, "node2", "fd00:60::12").update(address="fd00:60::11")
    args["node_addresses"] = {"node1": "fd00:60::11", "node2": "fd00:60::11"}
    args["vip"] = args.pop("vip6")


def vip_used(args):
    probe(args, "node2", "192.168.60.100").update(answers=True, mac="52:54:00:99:99:99")


def vip6_used(args):
    probe(args, "node1", "fd00:60::100").update(answers=True, mac="52:54:00:99:99:98")


def unreachable(args):
    probe(args, "node1", "10.60.0.12")["answers"] = False


def size_differs(args):
    disk(args, "node2", "/dev/vdb")["size"] = 3 * GIB


def filesystem_on_disk(args):
    disk(args, "node2", "/dev/vdb").update(signature="ext4", label="old-data")


def partitions_on_disk(args):
    disk(args, "node1", "/dev/vdb").update(children=["/dev/vdb1"], mountpoints=["/srv/old"])


def no_disk(args):
    args["drbd_disks"]["node2"] = "/dev/disk/by-id/virtio-nothing"


def unsynced(args):
    args["nodes"]["node2"]["time_synchronized"] = False


def replication_elsewhere(args):
    addr(args, "node2", "10.60.0.12", "eth2").update(address="10.61.0.12")
    args["replication_addresses"]["node2"] = "10.61.0.12"


def interface_down(args):
    iface(args, "node2")["state"] = "DOWN"


def no_interface(args):
    iface(args, "node1")["name"] = "ens3"


def package_differs(args):
    args["nodes"]["node2"]["packages"]["keepalived"] = "1:2.2.8-1"


def package_only_one(args):
    args["nodes"]["node1"]["packages"]["drbd-utils"] = None


def other_wwid(args):
    disk(args, "node2", "/dev/sda")["wwid"] = "36001405ffffffffffffffffffffffff0"


def san_filesystem(args):
    for host in ("node1", "node2"):
        disk(args, host, "/dev/sda").update(signature="LVM2_member")


def same_name(args):
    args["nodes"]["node2"].update(hostname="node1", fqdn="node1.lab.test")


def bad_fqdn(args):
    args["nodes"]["node1"]["fqdn"] = "node1"


def localhost_fqdn(args):
    args["nodes"]["node2"]["fqdn"] = "localhost.localdomain"


def address_not_there(args):
    args["node_addresses"]["node1"] = "192.168.60.21"


def address_garbage(args):
    args["node_addresses"]["node1"] = "node1.lab.test"


def ipv6_address_ipv4_vip(args):
    args.pop("vip6", None)
    args["node_addresses"]["node1"] = "fd00:60::11"


def setter(**values):
    def change(args):
        args.update(values)
    return change


CASES = [
    # id, storage, change, [(code, host)]
    ("one node", "drbd", drop_host, [("node_count", "pair")]),
    ("three nodes", "drbd", add_host, [("node_count", "pair")]),
    ("other release", "drbd", lambda a: set_os(a, "node2", version_id="11", codename="bullseye"),
     [("os_mismatch", "pair")]),
    ("other distribution", "drbd", lambda a: set_os(a, "node2", id="ubuntu", version_id="22.04", codename="jammy"),
     [("os_mismatch", "pair")]),
    ("other architecture", "drbd", lambda a: set_os(a, "node1", architecture="arm64"), [("arch_mismatch", "pair")]),
    ("package version differs", "drbd", package_differs, [("package_mismatch", "pair")]),
    ("package on one node", "drbd", package_only_one, [("package_missing", "node1")]),
    ("no public interface", "drbd", no_interface, [("interface_missing", "node1")]),
    ("public interface down", "drbd", interface_down, [("interface_down", "node2")]),
    ("DHCP address", "drbd", dynamic("node2", "192.168.60.12"), [("dynamic_address", "node2")]),
    ("SLAAC address", "drbd", dynamic("node1", "fd00:60::11"), [("dynamic_address", "node1")]),
    ("DHCP replication address", "drbd", dynamic("node1", "10.60.0.11", "eth2"), [("dynamic_address", "node1")]),
    ("address not on the node", "drbd", address_not_there, [("address_missing", "node1")]),
    ("address not an address", "drbd", address_garbage, [("address_invalid", "node1")]),
    ("no IPv6 for vip6", "drbd",
     lambda a: iface(a, "node2")["addresses"].remove(addr(a, "node2", "fd00:60::12")),
     [("address_missing", "node2")]),
    ("same address", "drbd", same_address, [("duplicate_address", "pair")]),
    ("same IPv6 address", "drbd", same_address6, [("duplicate_address", "pair")]),
    ("other subnet", "drbd", move_address, [("subnet_mismatch", "pair"), ("vip_outside_subnet", "node2")]),
    ("other IPv6 subnet", "drbd", move_address6, [("subnet_mismatch", "pair"), ("vip_outside_subnet", "node2")]),
    ("replication in other subnet", "drbd", replication_elsewhere, [("subnet_mismatch", "pair")]),
    ("vip outside", "drbd", setter(vip="192.168.70.100/24"),
     [("vip_outside_subnet", "node1"), ("vip_outside_subnet", "node2")]),
    ("vip6 outside", "drbd", setter(vip6="fd00:70::100/64"),
     [("vip_outside_subnet", "node1"), ("vip_outside_subnet", "node2")]),
    ("vip without prefix", "drbd", setter(vip="192.168.60.100"), [("vip_invalid", "pair")]),
    ("vip6 of the same family", "drbd", setter(vip6="192.168.60.101/24"), [("vip_invalid", "pair")]),
    ("vip is node1", "drbd", setter(vip="192.168.60.11/24"), [("vip_is_node_address", "node1")]),
    ("vip6 is node2", "drbd", setter(vip6="fd00:60::12/64"), [("vip_is_node_address", "node2")]),
    ("vip is a single address", "drbd", setter(vip="192.168.60.100/32"), [("vip_invalid", "pair")]),
    ("vip6 is a single address", "drbd", setter(vip6="fd00:60::100/128"), [("vip_invalid", "pair")]),
    ("node address of no floating IP's family", "drbd", ipv6_address_ipv4_vip, [("address_invalid", "node1")]),
    ("vip is network", "drbd", setter(vip="192.168.60.0/24"), [("vip_reserved", "pair")]),
    ("vip is broadcast", "drbd", setter(vip="192.168.60.255/24"), [("vip_reserved", "pair")]),
    ("vip6 is subnet-router anycast", "drbd", setter(vip6="fd00:60::/64"), [("vip_reserved", "pair")]),
    ("vip answers", "drbd", vip_used, [("vip_in_use", "pair")]),
    ("vip6 answers", "drbd", vip6_used, [("vip_in_use", "pair")]),
    ("peer unreachable", "drbd", unreachable, [("peer_unreachable", "node1")]),
    ("same host name", "drbd", same_name, [("hostname_conflict", "pair")]),
    ("FQDN without domain", "drbd", bad_fqdn, [("fqdn_invalid", "node1")]),
    ("FQDN is localhost", "drbd", localhost_fqdn, [("fqdn_invalid", "node2")]),
    ("LUN not seen", "san", other_wwid, [("wwid_mismatch", "node2")]),
    ("LUN holds LVM", "san", san_filesystem, [("disk_in_use", "node1"), ("disk_in_use", "node2")]),
    ("backing device missing", "drbd", no_disk, [("disk_missing", "node2")]),
    ("backing devices differ", "drbd", size_differs, [("disk_size_mismatch", "pair")]),
    ("filesystem on backing device", "drbd", filesystem_on_disk, [("disk_in_use", "node2")]),
    ("partitions on backing device", "drbd", partitions_on_disk, [("disk_in_use", "node1")]),
    ("clock not synchronised", "drbd", unsynced, [("time_unsynchronized", "node2")]),
]


@pytest.mark.parametrize("storage,change,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_reported_with_its_fix(run_module, storage, change, expected):
    args = pair_args(storage)
    change(args)
    failed, result, dummy = run(run_module, args)
    assert failed
    assert sorted((p["code"], p["host"]) for p in result["problems"]) == sorted(expected), result["msg"]
    for problem in result["problems"]:
        assert f"[{problem['code']}] {problem['host']}: {problem['message']}" in result["msg"]
        # Every message says what to do, not only what is wrong.
        assert ";" in problem["message"], problem["message"]


def test_every_documented_code_has_a_case():
    documented = {line.split("C(")[1].split(")")[0]
                  for line in ha_pair_check.DOCUMENTATION.splitlines() if line.strip().startswith("- C(")}
    covered = {code for case in CASES for code, dummy in case[3]}
    assert documented == covered


def test_all_problems_are_reported_at_once(run_module):
    args = pair_args()
    for change in (package_differs, dynamic("node2", "192.168.60.12"), filesystem_on_disk, unsynced, vip_used):
        change(args)
    failed, result, dummy = run(run_module, args)
    assert failed
    assert [p["code"] for p in result["problems"]] == [
        "package_mismatch", "dynamic_address", "vip_in_use", "disk_in_use", "time_unsynchronized"]
    assert "5 problem(s)" in result["msg"]
    assert "1:2.2.7-1+b2" in result["msg"] and "1:2.2.8-1" in result["msg"]


def test_ignored_codes_become_warnings(run_module):
    args = pair_args()
    unsynced(args)
    args["ignore"] = ["time_unsynchronized"]
    failed, result, warnings = run(run_module, args)
    assert not failed
    assert [w["code"] for w in result["warnings_found"]] == ["time_unsynchronized"]
    assert any("time_unsynchronized" in w for w in warnings)


def test_small_size_difference_is_tolerated(run_module):
    args = pair_args()
    disk(args, "node2", "/dev/vdb")["size"] = 2 * GIB - 4 * (1 << 20)
    failed, result, dummy = run(run_module, args)
    assert not failed, result["msg"]
    args["disk_size_tolerance"] = 0.1
    failed, result, dummy = run(run_module, copy.deepcopy(args))
    assert failed and [p["code"] for p in result["problems"]] == ["disk_size_mismatch"]


def test_vip_seen_from_both_nodes_is_one_problem(run_module):
    args = pair_args()
    vip_used(args)
    probe(args, "node1", "192.168.60.100").update(answers=True, mac="52:54:00:99:99:99")
    failed, result, dummy = run(run_module, args)
    assert [(p["code"], p["host"]) for p in result["problems"]] == [("vip_in_use", "pair")]
    assert "52:54:00:99:99:99" in result["msg"] and "seen from node1, node2" in result["msg"]


def test_vip_outside_the_subnet_is_not_probed_for_use(run_module):
    """A floating IP in another subnet may answer through a router; that is not
    the floating IP being in use on the public segment."""
    args = pair_args()
    args["vip"] = "192.168.70.100/24"
    for host in ("node1", "node2"):
        args["nodes"][host]["probes"].append({"address": "192.168.70.100", "answers": True,
                                              "mac": None, "local": False})
    failed, result, dummy = run(run_module, args)
    assert sorted(p["code"] for p in result["problems"]) == ["vip_outside_subnet", "vip_outside_subnet"]


def test_iscsi_lun_before_login_is_not_a_problem(run_module):
    args = pair_args("san")
    args["san_lun_expected"] = False
    for host in ("node1", "node2"):
        args["nodes"][host]["block_devices"] = args["nodes"][host]["block_devices"][:2]
    failed, result, dummy = run(run_module, copy.deepcopy(args))
    assert not failed, result["msg"]
    # Once one node sees the LUN, the other must see it too.
    args["nodes"]["node1"]["block_devices"] = pair_args("san")["nodes"]["node1"]["block_devices"]
    failed, result, dummy = run(run_module, args)
    assert failed and [(p["code"], p["host"]) for p in result["problems"]] == [("wwid_mismatch", "node2")]


def test_kernel_difference_is_a_warning(run_module):
    args = pair_args()
    set_os(args, "node2", kernel="6.1.0-57-cloud-amd64")
    failed, result, warnings = run(run_module, args)
    assert not failed
    assert any("kernels differ" in w for w in warnings)


@pytest.mark.parametrize("value,expected", [
    ("360014056c1d4e2a1b2c4d5e8f90a1b2c", "60014056c1d4e2a1b2c4d5e8f90a1b2c"),
    ("naa.60014056C1D4E2A1B2C4D5E8F90A1B2C", "60014056c1d4e2a1b2c4d5e8f90a1b2c"),
    ("0x60014056c1d4e2a1", "60014056c1d4e2a1"),
    (None, ""),
])
def test_wwid_spellings_compare_equal(value, expected):
    assert ha_pair_check.normal_wwid(value) == expected


def test_an_unknown_name_to_ignore_is_refused_with_the_codes(run_module):
    """A typo in preflight_ignore ignores nothing: refused, not silently accepted."""
    args = pair_args()
    args["ignore"] = ["time_unsynchronised", "time_unsynchronized"]
    failed, result, dummy = run(run_module, args)
    assert failed
    assert "preflight_ignore) names time_unsynchronised, which no check reports" in result["msg"]
    assert "time_unsynchronized" in result["msg"].split("codes of docs/preflight.md: ")[1]


def test_the_codes_are_the_ones_the_checks_report_and_the_documentation_lists():
    source = Path(ha_pair_check.__file__).read_text()
    reported = set(re.findall(r'self\.add\(\s*"(\w+)"', source))
    documented = re.findall(r"^  - C\((\w+)\) - ", ha_pair_check.DOCUMENTATION, re.M)
    assert reported == set(ha_pair_check.CODES)
    assert documented == list(ha_pair_check.CODES)


def test_a_one_shot_confirmation_accepts_only_the_device_it_names(run_module):
    """bluemind_ha_format_confirm names a DRBD disk by its serial or WWN and the
    LUN by its WWID: a device it names becomes a warning (erased in this run),
    any other stays disk_in_use, and a device name is no confirmation."""
    args = pair_args()
    filesystem_on_disk(args)
    disk(args, "node2", "/dev/vdb").update(serial="drbd-b2")
    for given in ("/dev/vdb", "virtio-drbd", "drbd-b1"):
        failed, result, dummy = run(run_module, dict(args, format_confirm=given))
        assert failed and [p["code"] for p in result["problems"]] == ["disk_in_use"], result
        assert "bluemind_ha_format_confirm=drbd-b2" in result["msg"] and f"={given} does not name it" in result["msg"]
    failed, result, warnings = run(run_module, dict(args, format_confirm="other, DRBD-B2"))
    assert not failed, result["msg"]
    assert any("drbd role erases it" in w for w in warnings), warnings
    disk(args, "node2", "/dev/vdb").update(serial=None)
    failed, result, dummy = run(run_module, dict(args, format_confirm="drbd-b2"))
    assert failed and "wipefs -a /dev/vdb" in result["msg"] and "no WWN or serial" in result["msg"]
    san = pair_args("san")
    san_filesystem(san)
    failed, result, dummy = run(run_module, san)
    assert failed and f"-e bluemind_ha_format_confirm={san['san_wwid']}" in result["msg"]
    failed, result, warnings = run(run_module, dict(san, format_confirm=WWID.upper()))
    assert not failed, result["msg"]
    assert any("san role formats it" in w for w in warnings), warnings
    failed, result, dummy = run(run_module, dict(san, format_confirm="/dev/sda"))
    assert failed
