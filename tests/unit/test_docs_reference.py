"""The documentation against the code: docs/reference.md is what
tools/role_reference.py writes from the roles' argument_specs, and every
variable the example inventories (docs/examples/) and the lab's inventories
(molecule/*/molecule.yml) set is a variable the collection reads, so that a typo
in an example fails here instead of being silently ignored by Ansible."""
import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tools" / "role_reference.py"
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yml"))
SCENARIOS = sorted((ROOT / "molecule").glob("*/molecule.yml"))

# Variables the playbooks read that no role declares (their argument_specs cannot
# hold them: playbooks/*.yml set or use them in their own plays). Keep this list
# in step with the playbooks and with docs/operations.md, which documents each.
PLAYBOOK_VARIABLES = {
    "bluemind_ha_switchover_to",  # switchover: the node to move the active role to
    "bluemind_ha_operation_timeout",  # switchover, restore_nominal, rebuild, upgrade: bound of each wait
    "bluemind_ha_restore_preferred",  # restore_nominal: also move back to the preferred node
    "bluemind_ha_resync_timeout",  # restore_nominal, rebuild: bound of the storage resync wait
    "bluemind_ha_rebuild_node",  # rebuild: the node reinstalled from a bare OS
    "bluemind_ha_status_fail",  # status: fail when the pair is not nominal (default true)
}
# Ansible's own connection and privilege variables, which an inventory may set.
CONNECTION_VARIABLES = {
    "ansible_host", "ansible_port", "ansible_user", "ansible_become", "ansible_become_method",
    "ansible_python_interpreter", "ansible_ssh_private_key_file", "ansible_ssh_common_args",
}
# Checked by the roles' validate task files rather than marked required in the
# argument_specs (they depend on other variables): an example must set them too.
REQUIRED_BY_VALIDATION = {
    "bluemind_version", "bluemind_external_url", "bluemind_domain", "bluemind_admin0_password",
    "bluemind_setup_password", "bluemind_ha_bmc",
}
# The roles site.yml runs for each storage method.
SITE_ROLES = {
    "drbd": ["preflight", "fencing", "drbd", "bluemind", "controller", "keepalived"],
    "san": ["preflight", "fencing", "san", "bluemind", "controller", "keepalived"],
}


def load_generator():
    spec = importlib.util.spec_from_file_location("role_reference_under_test", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def specs(role):
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))["argument_specs"]


def role_names():
    return sorted(p.parents[1].name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def role_options():
    names = set()
    for role in role_names():
        for entry in specs(role).values():
            names.update((entry or {}).get("options") or {})
    return names


def required_options(storage):
    names = set()
    for role in SITE_ROLES[storage]:
        for entry in specs(role).values():
            names.update(n for n, o in ((entry or {}).get("options") or {}).items() if (o or {}).get("required"))
    return names | REQUIRED_BY_VALIDATION


def inventory_hosts(group, inherited=None):
    """{host: {variable: value}} of an inventory group and its children, group
    variables first, host variables over them (what Ansible gives each host)."""
    merged = dict(inherited or {}, **(group.get("vars") or {}))
    hosts = {name: dict(merged, **(values or {})) for name, values in (group.get("hosts") or {}).items()}
    for child in (group.get("children") or {}).values():
        for name, values in inventory_hosts(child or {}, merged).items():
            hosts[name] = dict(hosts.get(name, {}), **values)
    return hosts


def example_settings(path):
    """(where, variable) for every variable the example inventory sets."""
    inventory = yaml.safe_load(path.read_text(encoding="utf-8"))
    found = []

    def walk(name, group):
        group = group or {}
        found.extend((f"{path.name}: group {name}", v) for v in group.get("vars") or {})
        for host, values in (group.get("hosts") or {}).items():
            found.extend((f"{path.name}: host {host}", v) for v in values or {})
        for child, sub in (group.get("children") or {}).items():
            walk(child, sub)

    for name, group in inventory.items():
        walk(name, group)
    return found


def scenario_settings(path):
    """(where, variable) for the lab inventory's group_vars and the host_vars of
    the pair's nodes. Other hosts (the SAN scenario's storage array VM) are test
    infrastructure: their lab_* variables are read by molecule/shared/prepare.yml."""
    scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
    inventory = scenario["provisioner"]["inventory"]
    pair = {p["name"] for p in scenario["platforms"] if "bluemind_ha" in p.get("groups", [])}
    found = []
    for group, values in (inventory.get("group_vars") or {}).items():
        found.extend((f"{path.parent.name}: group_vars {group}", v) for v in values or {})
    for host, values in (inventory.get("host_vars") or {}).items():
        if host in pair:
            found.extend((f"{path.parent.name}: host_vars {host}", v) for v in values or {})
    return found


def test_the_role_reference_is_up_to_date(capsys):
    generator = load_generator()
    status = generator.check(ROOT / "docs" / "reference.md")
    assert status == 0, capsys.readouterr().err + " (tools/role_reference.py --check)"


def test_a_stale_reference_is_reported(tmp_path, capsys):
    generator = load_generator()
    stale = tmp_path / "reference.md"
    stale.write_text(generator.render().replace("| `drbd_port` |", "| `drbd_prot` |"), encoding="utf-8")
    assert generator.check(stale) == 1
    assert "docs/reference.md is out of date: run python tools/role_reference.py" in capsys.readouterr().err
    assert generator.check(tmp_path / "missing.md") == 1


def test_every_role_option_is_in_the_reference():
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    missing = sorted(name for name in role_options() if f"| `{name}` |" not in page)
    assert not missing, missing


def test_the_examples_and_the_lab_exist():
    assert [p.name for p in EXAMPLES] == ["inventory-drbd.yml", "inventory-san.yml"]
    assert len(SCENARIOS) >= 2


@pytest.mark.parametrize("path", EXAMPLES + SCENARIOS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_variable_set_is_one_the_collection_reads(path):
    known = role_options() | PLAYBOOK_VARIABLES | CONNECTION_VARIABLES
    settings = example_settings(path) if path.parent.name == "examples" else scenario_settings(path)
    assert settings, f"{path}: no variable found (is the layout still the one this test reads?)"
    unknown = sorted({(where, name) for where, name in settings if name not in known})
    assert not unknown, f"not an option of any role nor a playbook variable: {unknown}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_sets_what_its_storage_method_requires(path):
    inventory = yaml.safe_load(path.read_text(encoding="utf-8"))
    hosts = inventory_hosts(inventory["bluemind_ha"])
    assert len(hosts) == 2, hosts
    for host, values in hosts.items():
        storage = values.get("bluemind_ha_storage")
        assert path.stem.endswith(str(storage)), f"{path.name}: {host} has bluemind_ha_storage {storage}"
        missing = sorted(required_options(storage) - set(values))
        assert not missing, f"{path.name}: {host} lacks {missing}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_secrets_in_the_examples_come_from_a_vault(path):
    inventory = yaml.safe_load(path.read_text(encoding="utf-8"))
    secrets = {"bluemind_admin0_password", "bluemind_setup_password", "drbd_shared_secret", "san_chap_password", "san_chap_password_in",
               "keepalived_auth_pass", "controller_alert_smtp_password", "controller_alert_webhook_token"}
    for host, values in inventory_hosts(inventory["bluemind_ha"]).items():
        for name in secrets & set(values):
            assert str(values[name]).startswith("{{ vault_"), f"{path.name}: {host} {name} is not a vault reference"
        bmc = values.get("bluemind_ha_bmc") or {}
        assert str(bmc.get("password", "")).startswith("{{ vault_"), f"{path.name}: {host} BMC password"
