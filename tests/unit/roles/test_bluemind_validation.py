"""The bluemind role's validation (roles/bluemind/tasks/validate.yml), rendered
with Ansible's own templating from the role's defaults: the post-install setup's
two passwords, each its own variable (admin0's --admin0-pass, the Setup Wizard's
--sw-pass), refused before any change when missing or short."""
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

ROLE = Path(__file__).resolve().parents[3] / "roles" / "bluemind"
VALID = {"bluemind_version": "5.1.100", "bluemind_external_url": "mail.example.org", "bluemind_domain": "example.org",
         "bluemind_admin0_password": "admin0-password", "bluemind_setup_password": "wizard-password",
         "bluemind_subscription_file": "/srv/files/subscription.bmz", "inventory_hostname": "node1",
         "preflight_node_info": {"ha_node": {"packages": {}}}}


def trusted(value):
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    return trust_as_template(value) if isinstance(value, str) else value


def problems(**overrides):
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update(VALID)
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    for key, value in list(variables.items()):
        if isinstance(value, str) and "{{" in value:
            variables[key] = templar.template(trust_as_template(value))
    task = next(t for t in yaml.safe_load((ROLE / "tasks" / "validate.yml").read_text())
                if t["name"] == "Check the BlueMind variables")
    variables.update(trusted(task["vars"]))
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template("{{ __bluemind_problems }}"))


def test_a_complete_inventory_passes():
    assert problems() == []


@pytest.mark.parametrize("overrides,variable", [
    ({"bluemind_admin0_password": ""}, "bluemind_admin0_password"),
    ({"bluemind_admin0_password": "short"}, "bluemind_admin0_password"),
    ({"bluemind_setup_password": ""}, "bluemind_setup_password"),
])
def test_each_setup_password_is_required_for_the_cli_setup(overrides, variable):
    found = problems(**overrides)
    assert len(found) == 1 and found[0].startswith(variable), found


def test_an_inventory_of_before_the_split_is_told_which_password_is_which():
    # Until 2026-12 bluemind_setup_password was documented as admin0's.
    found = problems(bluemind_admin0_password="")
    assert "bluemind_setup_password is the password of the Setup Wizard (--sw-pass), not the one of admin0" in found[0]


def test_without_the_cli_setup_no_password_is_needed():
    assert problems(bluemind_cli_setup=False, bluemind_admin0_password="", bluemind_setup_password="") == []
