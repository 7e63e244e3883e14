"""What the unit tests use of ansible-core that changed at 2.19, for every version
meta/runtime.yml claims (tests/core_range.py runs the tests on each).

Not named ansible_compat: that is the import name of a package ansible-lint
installs in the same virtual environment.

- ``trust_as_template``: from 2.19, a string is templated only when marked as
  trusted; before 2.19 every string is, so marking is the identity.
- ``patch_module_args``: ansible.module_utils.testing appeared in 2.19; before,
  AnsibleModule reads its arguments from ``basic._ANSIBLE_ARGS`` (what the
  collections' unit tests set).
"""
from __future__ import annotations

import contextlib
import json
from unittest import mock

from ansible.module_utils import basic
from ansible.template import Templar

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19
    def trust_as_template(value):
        return value

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    @contextlib.contextmanager
    def patch_module_args(args=None):
        if not isinstance(args, (dict, type(None))):
            raise TypeError("The `args` arg must be a dict or None.")
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args or {})}).encode()
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield

__all__ = ["Templar", "patch_module_args", "trust_as_template"]
