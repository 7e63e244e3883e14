"""The DRBD role's guards around its shared secret, taken from the task files and
rendered with Ansible's own templating: validation refuses secrets the resource
file cannot quote, and the adjust plan shown to the operator hides the secret."""
import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from core_compat import Templar, trust_as_template

TASKS = Path(__file__).resolve().parents[3] / "roles" / "drbd" / "tasks"


def render(expression: str, **variables):
    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(expression))


@pytest.mark.parametrize("secret,accepted", [
    ("a-long-enough-secret", True),
    ("short", False),
    ("with a space inside it", False),
    ('with"a-quote-inside-it', False),
    ("with\\a-backslash-inside", False),
])
def test_validation_refuses_secrets_the_resource_file_cannot_quote(secret, accepted):
    task = yaml.safe_load((TASKS / "validate.yml").read_text())[0]
    # The secret's condition, as written in the task (the rest needs every variable).
    condition = re.search(r"\(\[\] if (drbd_shared_secret .*?) else", task["vars"]["__drbd_problems"], re.S).group(1)
    assert render("{{ " + condition + " }}", drbd_shared_secret=secret) is accepted


def test_the_adjust_plan_shown_hides_the_whole_secret():
    task = next(t for t in yaml.safe_load((TASKS / "configure.yml").read_text())
                if t.get("name", "").startswith("Show what adjust changes"))
    plan = ("drbdsetup new-peer bluemind 1 --shared-secret=s3cret-s3cret-s3cret --cram-hmac-alg=sha256\n"
            "drbdsetup net-options bluemind 1 --shared-secret=s3cret-s3cret-s3cret")
    shown = render(task["ansible.builtin.debug"]["msg"], drbd_adjust_plan={"stdout": plan})
    assert "s3cret" not in shown and shown.count("--shared-secret=********") == 2
    assert "--cram-hmac-alg=sha256" in shown
