"""ha_node_info driven by outputs recorded on a lab node (fixtures/node_info/san_node1:
node1 of the san scenario, logged in to the iSCSI LUN through both portals).
Each case states the commands the module may run; any other command fails it."""
import json
from pathlib import Path

import pytest

from ansible_collections.bluemind_ha.cluster.plugins.modules import ha_node_info

FIXTURES = Path(__file__).parent / "fixtures" / "node_info"
DPKG_FORMAT = "${Package}\t${Status}\t${Version}\n"
WWID = "360014056c1d4e2a1b2c4d5e8f90a1b2c"


def recorded(name: str) -> tuple:
    """(rc, stdout) of a recorded output; files ending in a line rc=N carry the code."""
    text = (FIXTURES / "san_node1" / name).read_text()
    lines = text.splitlines(keepends=True)
    if lines and lines[-1].startswith("rc="):
        return int(lines[-1][3:]), "".join(lines[:-1])
    return 0, text


class FakeNode:
    """Answers the module's commands from recordings and remembers what ran."""

    def __init__(self, packages=("open-iscsi", "keepalived", "bm-core")):
        self.ran = []
        self.answers = {
            ("ip", "-j", "addr", "show"): recorded("ip_addr.json"),
            ("lsblk", "-J", "-b", "-p", "-o", "NAME,KNAME,SIZE,TYPE,MOUNTPOINTS"): recorded("lsblk.json"),
            ("dpkg", "--print-architecture"): (0, "amd64\n"),
            ("hostname", "--fqdn"): (0, "node1.lab.test\n"),
            ("timedatectl", "show", "-p", "NTPSynchronized", "--value"): (0, "no\n"),
            ("dpkg-query", "-W", "-f", DPKG_FORMAT, *packages): recorded("dpkg_query.txt"),
        }
        for disk in ("sda", "sdb", "vda"):
            self.answers[("udevadm", "info", "--query=property", "--name", f"/dev/{disk}")] = \
                recorded(f"udev_{disk}.txt")
            self.answers[("blkid", "-p", "-o", "export", f"/dev/{disk}")] = recorded(f"blkid_{disk}.txt")
        self.missing_tools = set()

    def run_command(self, args, **kwargs):
        key = (Path(args[0]).name, *args[1:])
        self.ran.append(key)
        assert key in self.answers, f"unexpected command {key}"
        rc, out = self.answers[key]
        return rc, out, ""

    def get_bin_path(self, module, name, required=False, opt_dirs=None):
        if name in self.missing_tools:
            if required:
                module.fail_json(msg=f"{name} not found")
            return None
        return f"/usr/bin/{name}"


@pytest.fixture()
def node(monkeypatch):
    fake = FakeNode()
    monkeypatch.setattr(ha_node_info.AnsibleModule, "run_command", fake.run_command)
    monkeypatch.setattr(ha_node_info.AnsibleModule, "get_bin_path",
                        lambda module, name, required=False, opt_dirs=None: fake.get_bin_path(module, name, required))
    monkeypatch.setattr(ha_node_info, "OS_RELEASE", str(FIXTURES / "san_node1" / "os-release"))
    monkeypatch.setattr(ha_node_info.socket, "gethostname", lambda: "node1")
    monkeypatch.setattr(ha_node_info.platform, "release", lambda: "6.1.0-56-cloud-amd64")
    links = {"/dev/disk/by-id/wwn-0x60014056c1d4e2a1b2c4d5e8f90a1b2c": "/dev/sda"}
    monkeypatch.setattr(ha_node_info, "resolve_device", links.get)
    return fake


def by_name(items, name):
    return next(i for i in items if i["name"] == name)


def test_reports_the_recorded_node(node, run_module):
    failed, result, dummy = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"]})
    assert not failed and result["changed"] is False
    facts = result["ha_node"]
    assert facts["os"] == {"id": "debian", "version_id": "12", "codename": "bookworm",
                           "architecture": "amd64", "kernel": "6.1.0-56-cloud-amd64"}
    assert facts["packages"] == {"open-iscsi": "2.1.8-1+deb12u1", "keepalived": None, "bm-core": None}
    assert facts["hostname"] == "node1" and facts["fqdn"] == "node1.lab.test"
    assert facts["time_synchronized"] is False
    assert facts["probes"] == [] and facts["missing_devices"] == []


def test_tells_static_from_dhcp_and_slaac_addresses(node, run_module):
    facts = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"]})[1]["ha_node"]
    public = by_name(facts["interfaces"], "eth1")
    assert public["mac"] == "52:54:00:f5:00:01" and public["state"] == "UP"
    assert {(a["address"], a["family"], a["prefix"], a["dynamic"], a["link_local"]) for a in public["addresses"]} == {
        ("192.168.60.11", "ipv4", 24, False, False),
        ("fd00:60::11", "ipv6", 64, False, False),
        ("fe80::5054:ff:fef5:1", "ipv6", 64, False, True),
    }
    management = by_name(facts["interfaces"], "eth0")
    dynamic = {a["address"]: a["dynamic"] for a in management["addresses"]}
    # eth0 has its IPv4 address from the lab's DHCP and a SLAAC IPv6 address.
    assert dynamic["10.0.2.15"] is True
    assert dynamic["fec0::5054:ff:fef5:0"] is True
    assert dynamic["fe80::5054:ff:fef5:0"] is False


def test_reports_disks_with_wwid_and_signature(node, run_module):
    facts = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"],
                                      "devices": ["/dev/disk/by-id/wwn-0x60014056c1d4e2a1b2c4d5e8f90a1b2c",
                                                  "/dev/disk/by-id/virtio-nothing"]})[1]["ha_node"]
    devices = {d["path"]: d for d in facts["block_devices"]}
    assert set(devices) == {"/dev/sda", "/dev/sdb", "/dev/vda"}
    assert devices["/dev/sda"]["wwid"] == devices["/dev/sdb"]["wwid"] == WWID
    assert devices["/dev/sda"]["size"] == 2147483648
    assert devices["/dev/sda"]["signature"] is None
    # A disk's identity for bluemind_ha_format_confirm, as udev reads it (recorded on the lab's iSCSI LUN).
    assert devices["/dev/sda"]["wwn"] == "0x60014056c1d4e2a1b2c4d5e8f90a1b2c"
    assert devices["/dev/sda"]["serial"] == "60014056c1d4e2a1b2c4d5e8f90a1b2c"
    assert (devices["/dev/vda"]["wwn"], devices["/dev/vda"]["serial"]) == (None, "root")
    assert devices["/dev/sda"]["aliases"] == ["/dev/disk/by-id/wwn-0x60014056c1d4e2a1b2c4d5e8f90a1b2c"]
    root = devices["/dev/vda"]
    assert (root["wwid"], root["signature"], root["label"], root["mountpoints"]) == (None, "ext4", "labroot", ["/"])
    assert facts["missing_devices"] == ["/dev/disk/by-id/virtio-nothing"]


def test_reads_drbd_metadata_and_partitions(node, run_module):
    lsblk = json.loads(recorded("lsblk.json")[1])
    lsblk["blockdevices"][1]["children"] = [{"name": "/dev/sdb1", "kname": "/dev/sdb1", "size": 1024, "type": "part",
                                             "mountpoints": ["/srv"]}]
    key = ("lsblk", "-J", "-b", "-p", "-o", "NAME,KNAME,SIZE,TYPE,MOUNTPOINTS")
    node.answers[key] = (0, json.dumps(lsblk))
    node.answers[("blkid", "-p", "-o", "export", "/dev/sda")] = (0, "DEVNAME=/dev/sda\nVERSION=v09\nTYPE=drbd\n")
    node.answers[("blkid", "-p", "-o", "export", "/dev/sdb")] = (0, "DEVNAME=/dev/sdb\nPTUUID=1\nPTTYPE=gpt\n")
    facts = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"]})[1]["ha_node"]
    devices = {d["path"]: d for d in facts["block_devices"]}
    assert devices["/dev/sda"]["signature"] == "drbd"
    assert devices["/dev/sdb"]["signature"] == "gpt"
    assert devices["/dev/sdb"]["children"] == ["/dev/sdb1"] and devices["/dev/sdb"]["mountpoints"] == ["/srv"]


@pytest.mark.parametrize("status,expected", [
    ("install ok installed", "1.0"),
    ("deinstall ok config-files", None),
    ("install ok half-configured", None),
])
def test_only_installed_packages_have_a_version(node, run_module, status, expected):
    node.answers[("dpkg-query", "-W", "-f", DPKG_FORMAT, "probe")] = (0, f"probe\t{status}\t1.0\n")
    facts = run_module(ha_node_info, {"packages": ["probe"]})[1]["ha_node"]
    assert facts["packages"] == {"probe": expected}


def test_probes_answer_by_echo_or_by_neighbour_table(node, run_module):
    for address in ("192.168.60.100", "192.168.60.12"):
        node.answers[("ip", "-4", "neigh", "flush", "to", address)] = (0, "")
    node.answers[("ip", "-6", "neigh", "flush", "to", "fd00:60::100")] = (0, "")
    node.answers.update({
        ("ping", "-4", "-n", "-c", "1", "-W", "1", "192.168.60.100"): (1, ""),
        ("ip", "-j", "-4", "neigh", "show", "to", "192.168.60.100"):
            (0, '[{"dst":"192.168.60.100","dev":"eth1","lladdr":"52:54:00:aa:bb:cc","state":["REACHABLE"]}]'),
        ("ping", "-6", "-n", "-c", "1", "-W", "1", "fd00:60::100"): (1, ""),
        ("ip", "-j", "-6", "neigh", "show", "to", "fd00:60::100"):
            (0, '[{"dst":"fd00:60::100","dev":"eth1","lladdr":"52:54:00:aa:bb:cd","state":["STALE"]}]'),
        ("ping", "-4", "-n", "-c", "1", "-W", "1", "192.168.60.12"): (0, ""),
        ("ip", "-j", "-4", "neigh", "show", "to", "192.168.60.12"): (0, "[]"),
    })
    facts = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"],
                                      "probe": ["192.168.60.100", "fd00:60::100", "192.168.60.12",
                                                "192.168.60.11"]})[1]["ha_node"]
    probes = {p["address"]: p for p in facts["probes"]}
    assert probes["192.168.60.100"] == {"address": "192.168.60.100", "answers": True,
                                        "mac": "52:54:00:aa:bb:cc", "local": False}
    assert probes["fd00:60::100"]["answers"] is False
    assert probes["192.168.60.12"]["answers"] is True
    # The node's own address is not probed over the wire.
    assert probes["192.168.60.11"]["local"] is True
    assert not any(c[-1] == "192.168.60.11" for c in node.ran)
    # The cache is flushed before each probe: a stale entry is no answer.
    assert node.ran.index(("ip", "-4", "neigh", "flush", "to", "192.168.60.100")) < \
        node.ran.index(("ping", "-4", "-n", "-c", "1", "-W", "1", "192.168.60.100"))


def test_rejects_a_probe_that_is_not_an_address(node, run_module):
    failed, result, dummy = run_module(ha_node_info, {"probe": ["192.168.60.100/24"]})
    assert failed and "probe" in result["msg"] and "192.168.60.100/24" in result["msg"]
    assert node.ran == []


def test_check_mode_runs_the_same_read_only_commands(node, run_module):
    result = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"],
                                       "_ansible_check_mode": True})[1]
    assert result["changed"] is False and result["ha_node"]["os"]["codename"] == "bookworm"
    assert {c[0] for c in node.ran} <= {"ip", "lsblk", "udevadm", "blkid", "dpkg", "dpkg-query",
                                        "hostname", "timedatectl"}


def test_clock_state_is_unknown_without_timedatectl(node, run_module):
    node.missing_tools.add("timedatectl")
    facts = run_module(ha_node_info, {"packages": ["open-iscsi", "keepalived", "bm-core"]})[1]["ha_node"]
    assert facts["time_synchronized"] is None


@pytest.mark.parametrize("props,expected", [
    ({"DM_UUID": "mpath-3600140512", "ID_SERIAL": "x"}, "3600140512"),
    ({"ID_BUS": "scsi", "ID_SERIAL": WWID, "ID_WWN": "0x6001"}, WWID),
    ({"ID_BUS": "ata", "ID_SERIAL": "Samsung_SSD", "ID_WWN": "0x5002538e"}, "0x5002538e"),
    ({"ID_SERIAL": "root"}, None),
])
def test_wwid_follows_multipath_conventions(props, expected):
    assert ha_node_info.wwid_from_udev(props) == expected


def test_reports_the_firmware_system_uuid_or_none(node, run_module, tmp_path, monkeypatch):
    path = tmp_path / "product_uuid"
    monkeypatch.setattr(ha_node_info, "PRODUCT_UUID", str(path))
    path.write_text("4C4C4544-0042-3510-8050-B4C04F4E4D32\n")
    facts = run_module(ha_node_info, {"packages": []})[1]["ha_node"]
    assert facts["product_uuid"] == "4c4c4544-0042-3510-8050-b4c04f4e4d32"
    assert facts["product_uuid_swapped"] == "44454c4c-4200-1035-8050-b4c04f4e4d32"
    assert ha_node_info.swapped_uuid(facts["product_uuid_swapped"]) == facts["product_uuid"]
    assert ha_node_info.swapped_uuid("not-a-uuid") is None and ha_node_info.swapped_uuid(None) is None
    for placeholder in ("00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", ""):
        path.write_text(placeholder + "\n")
        assert ha_node_info.read_product_uuid(str(path)) is None
    path.unlink()
    facts = run_module(ha_node_info, {"packages": []})[1]["ha_node"]
    assert facts["product_uuid"] is None and facts["product_uuid_swapped"] is None
