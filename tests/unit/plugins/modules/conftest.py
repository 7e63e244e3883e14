"""Run a module's main() in-process with given arguments and catch its result."""
import json

import pytest
from ansible.module_utils import basic
from core_compat import patch_module_args


class ModuleExit(Exception):
    def __init__(self, failed: bool, result: dict):
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


def _exit_json(self, **kwargs):
    raise ModuleExit(False, kwargs)


def _fail_json(self, msg, **kwargs):
    kwargs["msg"] = msg
    raise ModuleExit(True, kwargs)


@pytest.fixture()
def run_module(monkeypatch):
    """run_module(module, args) -> (failed, result, warnings)."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))

    def run(module, args: dict):
        # A round trip through JSON: what a playbook can pass, the test passes.
        with patch_module_args(json.loads(json.dumps(args))):
            with pytest.raises(ModuleExit) as caught:
                module.main()
        return caught.value.failed, caught.value.result, warnings
    return run
