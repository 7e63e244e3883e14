"""Bad inputs refused by the roles' validation before any host changes (issue 29,
item 8), rendered with Ansible's own templating from each role's defaults and
the lab's inventory (molecule/*/molecule.yml): each bad value is refused with a
message naming the variable; the lab's values and the defaults pass."""
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

ROOT = Path(__file__).resolve().parents[3]


def lab_vars(scenario: str, host: str = "node1") -> dict:
    """The group and host variables a scenario's converge gives a node."""
    spec = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    inventory = spec["provisioner"]["inventory"]
    found = dict(inventory["group_vars"].get("all", {}))
    found.update(inventory["group_vars"].get("bluemind_ha", {}))
    found.update(inventory["host_vars"].get(host, {}))
    return found


def role_vars(role: str, **overrides) -> dict:
    variables = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    variables.update({"inventory_hostname": "node1", "ansible_play_hosts_all": ["node1", "node2"]})
    variables.update(overrides)
    return variables


def task(role: str, name: str) -> dict:
    return next(t for t in yaml.safe_load((ROOT / "roles" / role / "tasks" / "validate.yml").read_text())
                if t["name"] == name)


def templar(variables: dict) -> Templar:
    return Templar(loader=DataLoader(), variables=variables)


def task_vars(role: str, name: str) -> dict:
    """A task's vars, as Ansible trusts what the role's files say."""
    return {k: trust_as_template(v) if isinstance(v, str) else v for k, v in task(role, name).get("vars", {}).items()}


def problems(role: str, name: str, listed: str, variables: dict) -> list:
    """The problem list a validation task computes (a vars entry, then one assert)."""
    return templar({**variables, **task_vars(role, name)}).template(trust_as_template("{{ " + listed + " }}"))


def failing(role: str, name: str, variables: dict) -> list[str]:
    """The first condition of an assert task that does not hold (assert stops
    there), or none."""
    render = templar({**variables, **task_vars(role, name)})
    for condition in task(role, name)["ansible.builtin.assert"]["that"]:
        if render.template(trust_as_template("{% if " + condition + " %}1{% else %}0{% endif %}")) != "1":
            return [condition]
    return []


# --------------------------------------------------------------------- DRBD

DRBD_VALID = {"drbd_shared_secret": "s" * 16, "bluemind_ha_drbd_disk": "/dev/vdb",
              "bluemind_ha_replication_address": "10.0.0.1", "drbd_initial_primary": "node1"}


def drbd_problems(**overrides) -> list:
    return problems("drbd", "Check the DRBD variables", "__drbd_problems",
                    role_vars("drbd", **{**DRBD_VALID, **overrides}))


def test_the_lab_drbd_inventory_passes():
    lab = lab_vars("drbd")
    assert drbd_problems(**{k: v for k, v in lab.items() if k.startswith(("drbd_", "bluemind_ha_"))}) == []


@pytest.mark.parametrize("secret", ["", None, "short", "s" * 64, "with space in it!", 'with"quote"inside',
                                    "back\\slash-in-it-x"])
def test_a_drbd_secret_that_drbd_cannot_keep_is_refused(secret):
    found = drbd_problems(drbd_shared_secret=secret)
    assert len(found) == 1 and found[0].startswith("drbd_shared_secret must be set, 16 to 63 characters"), found


def test_the_longest_drbd_secret_passes():
    assert drbd_problems(drbd_shared_secret="s" * 63) == []


@pytest.mark.parametrize("name", ["blue mind", "bluemind;reboot", "", "-bluemind", "a/b", "x" * 64, "bm\n"])
def test_a_drbd_resource_name_that_reaches_a_command_line_is_refused(name):
    found = drbd_problems(drbd_resource=name)
    assert len(found) == 1 and found[0].startswith("drbd_resource must be a name of letters"), found


@pytest.mark.parametrize("name", ["bluemind", "r0", "mail_data.1", "BM-2"])
def test_a_plain_drbd_resource_name_passes(name):
    assert drbd_problems(drbd_resource=name) == []


# --------------------------------------------------------------- keepalived

def vrrp_password_failures(password) -> list[str]:
    return failing("keepalived", "Check the VRRP password", role_vars("keepalived", keepalived_auth_pass=password))


@pytest.mark.parametrize("password", ["pass#1", "!secret", 'a"b', "a{b", "a}b", "a$b", "a`b", "a\\b", "", "123456789",
                                      "two words", "ab\n"])
def test_a_vrrp_password_keepalived_would_cut_or_misread_is_refused(password):
    assert vrrp_password_failures(password), password


@pytest.mark.parametrize("password", ["s3cret", "Ab-9_x.Z", "p@ss%&*(", "12345678"])
def test_a_plain_vrrp_password_passes(password):
    assert vrrp_password_failures(password) == []


# ------------------------------------------------------------------ fencing

BMC = {"type": "redfish", "address": "10.0.0.100", "port": 443, "username": "admin", "password": "secret"}


def bmc_failures(bmc) -> list[str]:
    variables = role_vars("fencing", fencing_mode="power")
    if bmc is not None:
        variables["bluemind_ha_bmc"] = bmc
    return failing("fencing", "Check that each node describes its management controller", variables)


def test_the_lab_bmc_entries_pass():
    for scenario in ("drbd", "san"):
        for host in ("node1", "node2"):
            assert bmc_failures(lab_vars(scenario, host)["bluemind_ha_bmc"]) == [], (scenario, host)


@pytest.mark.parametrize("change", [{"port": "https"}, {"port": 0}, {"port": 70000}, {"port": "443x"},
                                    {"password": "secret\nipaddr=10.0.0.1"}, {"username": "admin\r"},
                                    {"address": "10.0.0.100\n"}, {"type": "ilo"}, {"password": ""}])
def test_a_bmc_entry_that_would_reach_the_agent_wrong_is_refused(change):
    assert bmc_failures({**BMC, **change}), change


def test_a_missing_bmc_entry_is_refused_with_the_role_s_message():
    # Not a raw "undefined" error from a later condition.
    assert bmc_failures(None) == ["bluemind_ha_bmc is defined"]


@pytest.mark.parametrize("field", ["address", "username", "password"])
def test_a_control_character_in_a_bmc_field_is_what_refuses_it(field):
    (condition,) = bmc_failures({**BMC, field: BMC[field] + "\n"})
    assert "regex_findall" in condition


@pytest.mark.parametrize("change", [{"port": 8443}, {"port": "623", "type": "ipmi"}, {"password": "p@ss w0rd!"}])
def test_a_plain_bmc_entry_passes(change):
    bmc = {**BMC, **change}
    assert bmc_failures(bmc) == []


def distinct_bmcs(node1: dict, node2: dict) -> bool:
    name = "Check that the two nodes name two different management controllers"
    variables = {**role_vars("fencing", fencing_mode="power"),
                 "hostvars": {"node1": {"bluemind_ha_bmc": node1}, "node2": {"bluemind_ha_bmc": node2}},
                 **task_vars("fencing", name)}
    (condition,) = task("fencing", name)["ansible.builtin.assert"]["that"]
    return templar(variables).template(trust_as_template("{% if " + condition + " %}1{% else %}0{% endif %}")) == "1"


def test_one_bmc_entry_copied_to_both_nodes_is_refused():
    assert not distinct_bmcs(BMC, dict(BMC))
    assert not distinct_bmcs(BMC, {**BMC, "address": "10.0.0.100".upper(), "password": "other"})


def test_two_bmcs_pass():
    lab = [lab_vars("drbd", h)["bluemind_ha_bmc"] for h in ("node1", "node2")]
    assert distinct_bmcs(*lab)
    assert distinct_bmcs(BMC, {**BMC, "port": 8443})


# ---------------------------------------------------------------------- SAN

def san_problems(**overrides) -> list:
    variables = role_vars("san", bluemind_ha_san_wwid="360014056c1d4e2a1b2c4d5e8f90a1b2c", hostvars={})
    variables.update(yaml.safe_load((ROOT / "roles" / "san" / "vars" / "main.yml").read_text()))
    variables.update(overrides)
    variables = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in variables.items()}
    return problems("san", "Check the SAN variables", "__san_problems", variables)


def test_the_lab_san_inventory_passes():
    lab = lab_vars("san")
    assert san_problems(**{k: v for k, v in lab.items() if k.startswith(("san_", "bluemind_ha_san"))}) == []


@pytest.mark.parametrize("wwid", ["naa.6001405a1b2c3d4e5f60718293a4b5c6", "NAA.6001405A1B2C3D4E5F60718293A4B5C6",
                                  "0x6001405a1b2c3d4e5f60718293a4b5c6", "wwn-0x6001405a1b2c3d4e",
                                  "36001405A1B2C3D4E5F60718293A4B5C6"])
def test_a_wwid_that_multipath_conf_would_not_match_is_refused(wwid):
    found = san_problems(bluemind_ha_san_wwid=wwid)
    assert len(found) == 1 and found[0].startswith(f"bluemind_ha_san_wwid ({wwid}) must be"), found


@pytest.mark.parametrize("wwid", ["36001405a1b2c3d4e5f60718293a4b5c6", "2002538b471b2a6d1", "SATA_QEMU_HARDDISK_QM1"])
def test_a_wwid_as_multipath_shows_it_passes(wwid):
    assert san_problems(bluemind_ha_san_wwid=wwid) == []


def test_a_short_mutual_chap_secret_is_refused():
    found = san_problems(san_chap_username="bm", san_chap_password="twelve-chars", san_chap_username_in="array",
                         san_chap_password_in="short")
    assert found == ["san_chap_password_in must have at least 12 characters (iSCSI arrays refuse shorter CHAP"
                     " secrets)."], found
    assert san_problems(san_chap_username="bm", san_chap_password="twelve-chars", san_chap_username_in="array",
                        san_chap_password_in="twelve-chars-in") == []


@pytest.mark.parametrize("field", ["san_chap_username", "san_chap_password", "san_chap_password_in"])
def test_a_newline_in_a_chap_field_is_refused(field):
    values = {"san_chap_username": "bm", "san_chap_password": "twelve-chars", "san_chap_username_in": "array",
              "san_chap_password_in": "twelve-chars-in"}
    values[field] += "\nnode.session.auth.authmethod = None"
    found = san_problems(**values)
    assert len(found) == 1 and "printable ASCII, without newlines" in found[0], found


# ------------------------------------------------------ DRBD adjust's output

def adjust_failure(secret, stderr: str) -> str:
    check = next(t for t in yaml.safe_load((ROOT / "roles" / "drbd" / "tasks" / "adjust.yml").read_text())
                 if "ansible.builtin.assert" in t)
    variables = role_vars("drbd", drbd_shared_secret=secret,
                          drbd_adjust={"rc": 10, "stderr": stderr, "stdout": ""})
    return templar(variables).template(trust_as_template(check["ansible.builtin.assert"]["fail_msg"]))


SECRET = "lab-drbd-shared-secret"
FAILED_DRBDSETUP = (f"drbdsetup net-options bluemind 0 --protocol=C --cram-hmac-alg=sha256 --shared-secret={SECRET}"
                    f" --after-sb-0pri=discard-zero-changes\nCommand 'drbdsetup net-options' terminated with exit code 10\n"
                    f'drbd.d/bluemind.res:12: shared-secret "{SECRET}";')


def test_a_failed_adjust_shows_drbdadm_s_output_without_the_secret():
    message = adjust_failure(SECRET, FAILED_DRBDSETUP)
    assert SECRET not in message
    assert "--shared-secret=********" in message and "terminated with exit code 10" in message
    assert message.startswith("node1: drbdadm adjust bluemind failed (exit 10):"), message


def test_the_adjust_tasks_keep_their_output_out_of_the_log():
    tasks = yaml.safe_load((ROOT / "roles" / "drbd" / "tasks" / "adjust.yml").read_text())
    run = next(t for t in tasks if "ansible.builtin.command" in t)
    assert run["no_log"] is True and run["failed_when"] is False
    # Every drbdadm adjust the role's tasks run goes through adjust.yml (the
    # comparison with -d only prints, and has no_log itself).
    for path in (ROOT / "roles" / "drbd" / "tasks").glob("*.yml"):
        for other in yaml.safe_load(path.read_text()) or []:
            command = other.get("ansible.builtin.command")
            text = str(command.get("argv") if isinstance(command, dict) else command)
            if command is not None and "adjust" in text and path.name != "adjust.yml":
                assert other.get("no_log") is True and "-d" in text, (path.name, other["name"])


def test_a_secret_other_than_the_inventory_s_is_masked_in_the_option_too():
    # The running resource may carry the previous secret when the inventory's changed.
    message = adjust_failure(SECRET, "drbdsetup net-options bluemind 0 --shared-secret=previous-secret-0123 --protocol=C")
    assert "previous-secret-0123" not in message and "--shared-secret=******** --protocol=C" in message


# ------------------------------------------------------------------ erasing storage (issue 29, item 2)

STANDING = "Refuse a standing consent to erase the storage"
CONFIRM = "Check the one-shot confirmation to erase a device"


@pytest.mark.parametrize("scenario,setting", [("drbd", "drbd_overwrite_signatures"),
                                              ("san", "san_overwrite_signatures")])
@pytest.mark.parametrize("value", [True, False])
def test_a_standing_consent_to_erase_is_refused_whatever_its_value(scenario, setting, value):
    variables = role_vars("preflight", **lab_vars(scenario), **{setting: value})
    assert failing("preflight", STANDING, variables) != []
    message = templar({**variables, **task_vars("preflight", STANDING)}).template(
        trust_as_template(task("preflight", STANDING)["ansible.builtin.assert"]["fail_msg"]))
    assert message.startswith("node1: ") and setting in message and "-e bluemind_ha_format_confirm=" in message
    assert ("WWID" if scenario == "san" else "WWN or serial") in message


@pytest.mark.parametrize("scenario", ["drbd", "san"])
def test_the_lab_inventories_hold_no_consent_to_erase(scenario):
    assert failing("preflight", STANDING, role_vars("preflight", **lab_vars(scenario))) == []


@pytest.mark.parametrize("confirm", ["", "  ", "/dev/sdb", "drbd-a1, /dev/disk/by-id/virtio-x", 12345])
def test_a_confirmation_that_does_not_name_a_device_by_its_identity_is_refused(confirm):
    variables = role_vars("preflight", **lab_vars("drbd"), bluemind_ha_format_confirm=confirm)
    assert failing("preflight", CONFIRM, variables) != []


@pytest.mark.parametrize("confirm", ["drbd", "0x5000c500a1b2c3d4", "360014056c1d4e2a1b2c4d5e8f90a1b2c, drbd"])
def test_a_confirmation_naming_identities_passes(confirm):
    variables = role_vars("preflight", **lab_vars("drbd"), bluemind_ha_format_confirm=confirm)
    assert failing("preflight", CONFIRM, variables) == []


DISK_CHECK = "Check that the backing device carries no foreign data and is the one in use"


def disk_problems(signatures, identity_names=("drbd",), **overrides) -> list:
    """What the drbd role's disk check (configure.yml) says about a probed disk."""
    check = next(t for t in yaml.safe_load((ROOT / "roles" / "drbd" / "tasks" / "configure.yml").read_text())
                 if t.get("name") == DISK_CHECK)
    names = list(identity_names)
    probe = {"disk": "/dev/vdb", "disk_path": "/dev/vdb", "signatures": signatures,
             "metadata": any(s["type"] == "drbd" for s in signatures),
             "foreign": [s for s in signatures if s["type"] != "drbd"], "attached": None, "state": {},
             "identity": {"wwn": None, "serial": names[0] if names else None, "names": names}}
    variables = role_vars("drbd", **{"drbd_filesystem_label": "bluemind_ha", **lab_vars("drbd")}, drbd_probe={"stdout": __import__("json").dumps(probe)},
                          **overrides)
    local = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in check["vars"].items()}
    return templar({**variables, **local}).template(trust_as_template("{{ __drbd_problems }}"))


OLD = {"type": "ext4", "label": "olddata"}


def test_a_blank_disk_or_the_pair_s_metadata_needs_no_confirmation():
    assert disk_problems([]) == []
    assert disk_problems([{"type": "drbd", "label": None}]) == []


def test_a_foreign_disk_is_erased_only_under_a_confirmation_naming_it():
    refused = disk_problems([OLD])
    assert len(refused) == 1 and "-e bluemind_ha_format_confirm=drbd (the disk's serial number" in refused[0]
    assert "ext4 labelled olddata" in refused[0]
    assert disk_problems([OLD], bluemind_ha_format_confirm="other, DRBD") == []
    wrong = disk_problems([OLD], bluemind_ha_format_confirm="/dev/vdb")
    assert len(wrong) == 1 and "(bluemind_ha_format_confirm=/dev/vdb does not name it.)" in wrong[0]
    nameless = disk_problems([OLD], identity_names=(), bluemind_ha_format_confirm="anything")
    assert len(nameless) == 1 and "no confirmation can name it" in nameless[0] and "wipefs -a /dev/vdb" in nameless[0]


def test_the_pair_s_filesystem_is_never_erased_and_a_rebuild_needs_the_confirmation():
    for confirm in ({}, {"bluemind_ha_format_confirm": "drbd"}):
        pair = disk_problems([{"type": "ext4", "label": "bluemind_ha"}], **confirm)
        assert len(pair) == 1 and "the pair's" in pair[0] and "bluemind_ha.cluster.rebuild" in pair[0], pair
    stale = [{"type": "drbd", "label": None}, {"type": "ext4", "label": "bluemind_ha"}]
    rebuild = disk_problems(stale, drbd_rebuild=True)
    assert len(rebuild) == 1 and "old DRBD metadata of this node: the rebuild erases it" in rebuild[0]
    assert disk_problems(stale, drbd_rebuild=True, bluemind_ha_format_confirm="drbd") == []
    assert disk_problems([], drbd_rebuild=True) == []


# ------------------------------------------------------------------ the fence target's identity (issue 29, item 7)

IDENTITY = "Check that the peer's controller powers the peer, not this node nor another server"
UUID1, UUID2 = "8b0b5f6e-1c1d-5a55-9d0e-0000000000a1", "8b0b5f6e-1c1d-5a55-9d0e-0000000000a2"


def swapped(uuid):
    parts = uuid.split("-")
    return "-".join(["".join(reversed([p[i:i + 2] for i in range(0, len(p), 2)])) for p in parts[:3]] + parts[3:])


def identity_check(reported: list, own=UUID1, peer=UUID2) -> tuple[list, str]:
    """node1's check of the controller named for node2, which reported the
    given system UUIDs: (the failing condition or none, the message)."""
    bmc = {"type": "redfish", "address": "10.0.2.101", "port": 443, "username": "admin", "password": "pw"}

    def info(uuid):
        return {"ha_node": {"product_uuid": uuid, "product_uuid_swapped": swapped(uuid) if uuid else None}}

    variables = role_vars("fencing", preflight_node_info=info(own),
                          hostvars={"node2": {"bluemind_ha_bmc": bmc, "preflight_node_info": info(peer)}},
                          fencing_peer_systems={"results": [{"json": {"UUID": u}} if u is not None else {}
                                                            for u in reported]})
    message = templar({**variables, **task_vars("fencing", IDENTITY)}).template(
        trust_as_template(task("fencing", IDENTITY)["ansible.builtin.assert"]["fail_msg"]))
    return failing("fencing", IDENTITY, variables), " ".join(message.split())


def test_the_peer_s_controller_reporting_the_peer_s_uuid_passes():
    assert identity_check([UUID2.upper()])[0] == []
    assert identity_check([UUID1, UUID2])[0] == []  # a controller of several systems, the peer among them
    assert identity_check([swapped(UUID2)])[0] == []  # the other SMBIOS byte order


def test_a_crossed_or_copied_controller_entry_is_refused():
    failed, message = identity_check([UUID1])
    assert failed and message.startswith("node1: the management controller named for node2 (10.0.2.101:443")
    assert f"powers node1 itself (system UUID {UUID1})" in message and "crossed or copied" in message
    assert "powers node1 itself" in identity_check([swapped(UUID1)])[1]


def test_a_controller_of_another_server_or_without_uuid_is_refused():
    failed, message = identity_check(["11111111-2222-3333-4444-555555555555"])
    assert failed and "not node2 (" + UUID2 + ")" in message and "correct bluemind_ha_bmc" in message
    failed, message = identity_check([None])
    assert failed and "reports no system UUID" in message and "fencing_verify_identity: false" in message
    failed, message = identity_check([UUID2], peer=None)
    assert failed and "node2's firmware reports no system UUID" in message
