#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to bluemind_ha.cluster
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Manage many small files and directories of a node in one module run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ha_files
short_description: Manage a list of small files and directories in one module run
version_added: 0.1.0
description:
  - Creates, updates or removes every entry of O(files), in list order, in one module run.
    Meant for the small managed files of a role (systemd units and drop-ins, short wrapper
    scripts, configuration snippets) and the directories that hold them. One run replaces a loop of
    M(ansible.builtin.copy) and M(ansible.builtin.file) tasks, each of which costs a module
    run per item.
  - Every entry is checked before anything changes (absolute and unique paths, content and
    mode given where needed, owner and group known on the host, parent directories
    present, nothing in the way); when one fails, the module fails listing every problem
    and changes nothing.
  - A file is written only when its content differs, through a temporary file in the same
    directory that gets the owner, group and mode before it is synced and renamed over
    the path, so a reader never sees a partial file. Owner, group and mode are corrected
    when only they differ.
  - Parent directories are never created implicitly. A directory must exist, or be
    created by an earlier entry of the list.
author:
  - BlueMind HA collection maintainers (@bluemind-ha)
options:
  files:
    description:
      - The files and directories to manage, handled in this order.
      - List a directory before the entries inside it.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the entry. Listed at most once.
        type: path
        required: true
      state:
        description:
          - V(file) - a regular file with exactly O(files[].content).
          - V(directory) - a directory (created with O(files[].mode), O(files[].owner) and
            O(files[].group) when missing; its contents are left alone).
          - V(absent) - nothing at the path. A file or a symbolic link is removed, a
            directory only when it is empty (or emptied by earlier entries), otherwise the
            module fails.
        type: str
        choices: [file, directory, absent]
        default: file
      content:
        description:
          - The whole content of the file, as text (written as UTF-8).
          - Required with O(files[].state=file), not allowed with the other states.
        type: str
      mode:
        description:
          - Octal permissions as a quoted string, such as V("0644"), V("0755") or V("2750")
            (three or four octal digits, optionally after a leading zero).
          - Required with O(files[].state=file) and O(files[].state=directory), ignored
            with O(files[].state=absent).
          - Only a string is accepted, so quote the mode in YAML. An unquoted V(0644) is the
            number 420 to YAML, which would silently become the wrong mode if converted, so
            a number fails (this is why the type is V(raw) and not V(str)).
        type: raw
      owner:
        description: User that owns the entry, a name (or a numeric user ID).
        type: str
        default: root
      group:
        description: Group that owns the entry, a name (or a numeric group ID).
        type: str
        default: root
  daemon_reload:
    description:
      - When V(true) and at least one entry changed, run C(systemctl daemon-reload) once,
        after every entry is applied, so that systemd units and drop-ins written by this
        run take effect before the next task starts them. Nothing is reloaded when no
        entry changed, nor in check mode.
      - Replaces a separate M(ansible.builtin.systemd_service) task with
        O(ansible.builtin.systemd_service#module:daemon_reload=true) after the write, one
        module run less.
      - When the reload fails, the module fails naming the paths it changed, which stay
        changed.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would change (the same RV(changed_paths)) and changes nothing.
  diff_mode:
    support: full
    description:
      - Returns one difference per changed path, the content for files, a short text
        (V(absent), V(directory), the mode, owner and group) otherwise.
  platform:
    support: full
    platforms: posix
    description: Runs on POSIX targets with Python's standard library only.
notes:
  - Do not use this module for files that hold secrets (keys, passwords, tokens). The
    content of every entry is part of the module's arguments, which Ansible shows with
    C(-vvv), may log on the target, and which appear in the diff. Use
    M(ansible.builtin.template) or M(ansible.builtin.copy) with C(no_log) for those.
  - Symbolic links are not followed. A link at the path of an entry with
    O(files[].state=file) is replaced by a regular file (as M(ansible.builtin.copy) does),
    a link at the path of a directory entry is an error, and O(files[].state=absent)
    removes the link, not its target.
  - Sets no SELinux context and no file attributes; meant for small text files.
seealso:
  - module: ansible.builtin.copy
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Install the units and the wrapper of the controller
  bluemind_ha.cluster.ha_files:
    files:
      - path: /etc/systemd/system/bluemind-ha.service.d
        state: directory
        mode: "0755"
      - path: /etc/systemd/system/bluemind-ha.service.d/override.conf
        mode: "0644"
        content: |
          [Service]
          TimeoutStopSec=300
      - path: /usr/local/sbin/bluemind-ha-wrapper
        mode: "0755"
        content: "{{ lookup('ansible.builtin.template', 'wrapper.sh.j2') }}"
      - path: /etc/systemd/system/bluemind-ha-old.service
        state: absent
    daemon_reload: true
"""

RETURN = r"""
changed_paths:
  description: The paths that changed (or would change, in check mode), in the order of O(files).
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/bluemind-ha.service.d, /etc/systemd/system/bluemind-ha.service.d/override.conf]
results:
  description: One item per entry of O(files), in its order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path of the entry (normalised).
      type: str
      returned: always
      sample: /etc/systemd/system/bluemind-ha.service.d/override.conf
    state:
      description: The state asked for.
      type: str
      returned: always
      sample: file
    changed:
      description: Whether the entry changed (or would change, in check mode).
      type: bool
      returned: always
      sample: true
diff:
  description:
    - In diff mode, one item per changed path, with C(before_header), C(after_header),
      C(before) and C(after).
    - For a file, C(before) and C(after) are its content (text; a binary or very large old
      content is summarised); when the mode, owner or group also change, the headers carry
      them. Otherwise they are short texts such as C(absent), C(directory) and
      C(mode 0644).
  returned: changed, in diff mode
  type: list
  elements: dict
  sample:
    - before_header: /etc/systemd/system/bluemind-ha.service.d/override.conf
      after_header: /etc/systemd/system/bluemind-ha.service.d/override.conf
      before: "[Service]\nTimeoutStopSec=120\n"
      after: "[Service]\nTimeoutStopSec=300\n"
daemon_reloaded:
  description: Whether systemd was told to reload its units (O(daemon_reload) and a change, not in check mode).
  returned: always
  type: bool
  sample: true
problems:
  description: When an entry is invalid, every problem found, each naming its path. Nothing was changed.
  returned: failure
  type: list
  elements: str
  sample:
    - >-
      /etc/foo.d/foo.conf: its parent directory /etc/foo.d does not exist: list /etc/foo.d
      with state=directory before this entry (parents are not created implicitly)
"""

import grp
import os
import pwd
import re
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

MODE = re.compile(r"^0?[0-7]{3,4}$")
# Old content larger than this is summarised in the diff (ansible's default MAX_FILE_SIZE_FOR_DIFF).
DIFF_MAX_BYTES = 104448
NEEDS_MODE = ("file", "directory")


class Entry:
    """One entry of the files option, checked: absolute normalised path, numeric ids."""

    def __init__(self, path, state, content, mode, uid, gid):
        self.path = path
        self.state = state
        self.content = content
        self.mode = mode
        self.uid = uid
        self.gid = gid


def user_id(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return int(name) if name.isdigit() else None


def group_id(name):
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return int(name) if name.isdigit() else None


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def kind_of(path):
    """What is at path, links not followed: absent, directory, file (regular), link or other."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "other"


def octal(mode):
    return format(mode, "04o")


def check_entries(files):
    """(entries, problems): every entry checked against the host and the entries before
    it, without changing anything. The problems name the path they concern."""
    entries = []
    problems = []
    planned = {}  # path -> state asked by an earlier entry

    for number, item in enumerate(files, 1):
        raw = item["path"]
        state = item["state"]
        found = []
        if not os.path.isabs(raw):
            problems.append(f"files[{number}] {raw}: the path must be absolute")
            continue
        path = os.path.normpath(raw)
        if path in planned:
            problems.append(f"{path}: listed more than once (files[{number}])")
            continue

        content = item["content"]
        if state == "file" and content is None:
            found.append("content is required with state=file")
        if state != "file" and content is not None:
            found.append(f"content is only allowed with state=file, not with state={state}")

        mode = item["mode"]
        if mode is None and state in NEEDS_MODE:
            found.append(f"mode is required with state={state} (a quoted octal string such as \"0644\")")
        elif isinstance(mode, int) and not isinstance(mode, bool):
            found.append(f"mode must be a quoted octal string such as \"0644\", not the number {mode} "
                         "(YAML reads an unquoted 0644 as the number 420)")
        elif mode is not None and not isinstance(mode, str):
            found.append(f"mode must be a quoted octal string such as \"0644\", not {mode!r}")
        elif mode is not None and not MODE.match(mode):
            found.append(f"mode {mode!r} is not an octal mode such as \"0644\" or \"0755\" (quote it in YAML)")

        uid = gid = None
        if state in NEEDS_MODE:
            uid = user_id(item["owner"])
            if uid is None:
                found.append(f"owner {item['owner']!r} does not exist on this host")
            gid = group_id(item["group"])
            if gid is None:
                found.append(f"group {item['group']!r} does not exist on this host")
            found.extend(parent_problems(path, planned))

        found.extend(path_problems(path, state, planned))
        planned[path] = state
        problems.extend(f"{path}: {text}" for text in found)
        if not found:
            entries.append(Entry(path, state, content, int(mode, 8) if mode is not None else None, uid, gid))
    return entries, problems


def parent_problems(path, planned):
    parent = os.path.dirname(path)
    if parent == path:
        return []
    if parent in planned:
        if planned[parent] == "directory":
            return []
        if planned[parent] == "absent":
            return [f"its parent directory {parent} is removed by an earlier entry"]
        return [f"its parent {parent} is a file (an earlier entry)"]
    if os.path.isdir(parent):
        return []
    if kind_of(parent) != "absent":
        return [f"its parent {parent} is not a directory"]
    return [f"its parent directory {parent} does not exist: list {parent} with state=directory "
            "before this entry (parents are not created implicitly)"]


def path_problems(path, state, planned):
    kind = kind_of(path)
    if state == "file":
        if kind == "directory":
            return ["is a directory, it cannot be replaced by a file"]
        if kind == "other":
            return ["exists and is not a regular file (a device, socket or FIFO)"]
    elif state == "directory":
        if kind == "link":
            return ["is a symbolic link, not a directory"]
        if kind in ("file", "other"):
            return ["exists and is not a directory"]
    elif kind == "directory":
        try:
            inside = {os.path.join(path, name) for name in os.listdir(path)}
        except OSError as error:
            return [f"cannot list the directory: {error.strerror}"]
        inside |= {p for p, s in planned.items() if os.path.dirname(p) == path and s != "absent"}
        inside -= {p for p, s in planned.items() if s == "absent"}
        if inside:
            return [f"is a directory that is not empty ({len(inside)} entries, such as {sorted(inside)[0]}): "
                    "list what it holds with state=absent before it, or remove it otherwise"]
    return []


def attributes(entry):
    return {"mode": octal(entry.mode), "owner": user_name(entry.uid), "group": group_name(entry.gid)}


def current_attributes(st):
    return {"mode": octal(stat.S_IMODE(st.st_mode)), "owner": user_name(st.st_uid), "group": group_name(st.st_gid)}


def attribute_text(values):
    return "".join(f"{key} {values[key]}\n" for key in ("mode", "owner", "group"))


def attribute_note(values):
    return ", ".join(f"{key} {values[key]}" for key in ("mode", "owner", "group"))


def attributes_differ(entry, st):
    return stat.S_IMODE(st.st_mode) != entry.mode or st.st_uid != entry.uid or st.st_gid != entry.gid


def set_attributes(entry, st):
    """Owner first: chown clears the set-user-ID and set-group-ID bits the mode may want."""
    if st.st_uid != entry.uid or st.st_gid != entry.gid:
        os.chown(entry.path, entry.uid if st.st_uid != entry.uid else -1, entry.gid if st.st_gid != entry.gid else -1)
    os.chmod(entry.path, entry.mode)


def sync_directory(path):
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_atomically(entry, data):
    directory = os.path.dirname(entry.path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(entry.path)}.", suffix=".tmp",
                                             dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchown(handle.fileno(), entry.uid, entry.gid)
            os.fchmod(handle.fileno(), entry.mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, entry.path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    sync_directory(directory)


def shown(data):
    if len(data) > DIFF_MAX_BYTES:
        return f"(content of {len(data)} bytes, not shown)\n"
    if b"\x00" in data:
        return "(binary content, not shown)\n"
    return data.decode("utf-8", "replace")


def link_text(path):
    try:
        return f"symbolic link to {os.readlink(path)}\n"
    except OSError:
        return "symbolic link\n"


class Run:
    """Brings each entry to its state (or says what would change, in check mode)."""

    def __init__(self, check_mode):
        self.check_mode = check_mode
        self.changed_paths = []
        self.results = []
        self.diff = []

    def record(self, entry, changed, before_header=None, before="", after_header=None, after=""):
        self.results.append({"path": entry.path, "state": entry.state, "changed": changed})
        if changed:
            self.changed_paths.append(entry.path)
            self.diff.append({"before_header": before_header or entry.path, "after_header": after_header or entry.path,
                              "before": before, "after": after})

    def apply(self, entry):
        getattr(self, f"ensure_{entry.state}")(entry)

    def ensure_file(self, entry):
        data = entry.content.encode("utf-8", "surrogateescape")
        kind = kind_of(entry.path)
        want = attributes(entry)
        if kind == "file":
            st = os.lstat(entry.path)
            with open(entry.path, "rb") as handle:
                old = handle.read()
            new_attributes = attributes_differ(entry, st)
            if old == data:
                if new_attributes and not self.check_mode:
                    set_attributes(entry, st)
                self.record(entry, new_attributes, before=attribute_text(current_attributes(st)),
                            after=attribute_text(want))
                return
            before = shown(old)
            before_header = f"{entry.path} ({attribute_note(current_attributes(st))})" if new_attributes else None
            after_header = f"{entry.path} ({attribute_note(want)})" if new_attributes else None
        elif kind == "link":
            before, before_header = "", f"{entry.path} ({link_text(entry.path).strip()})"
            after_header = f"{entry.path} ({attribute_note(want)})"
        else:
            before, before_header = "", f"{entry.path} (absent)"
            after_header = f"{entry.path} ({attribute_note(want)})"
        if not self.check_mode:
            write_atomically(entry, data)
        self.record(entry, True, before_header, before, after_header, entry.content)

    def ensure_directory(self, entry):
        want = "directory\n" + attribute_text(attributes(entry))
        if kind_of(entry.path) == "absent":
            if not self.check_mode:
                os.mkdir(entry.path, 0o700)
                set_attributes(entry, os.lstat(entry.path))
            self.record(entry, True, before="absent\n", after=want)
            return
        st = os.lstat(entry.path)
        changed = attributes_differ(entry, st)
        if changed and not self.check_mode:
            set_attributes(entry, st)
        self.record(entry, changed, before="directory\n" + attribute_text(current_attributes(st)), after=want)

    def ensure_absent(self, entry):
        kind = kind_of(entry.path)
        if kind == "absent":
            self.record(entry, False)
            return
        before = {"directory": "directory\n", "file": "file\n", "other": "special file\n"}.get(kind) or \
            link_text(entry.path)
        if not self.check_mode:
            if kind == "directory":
                os.rmdir(entry.path)
            else:
                os.unlink(entry.path)
            sync_directory(os.path.dirname(entry.path))
        self.record(entry, True, before=before, after="absent\n")


def main():
    module = AnsibleModule(
        argument_spec={
            "files": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "path": {"type": "path", "required": True},
                    "state": {"type": "str", "choices": ["file", "directory", "absent"], "default": "file"},
                    "content": {"type": "str"},
                    "mode": {"type": "raw"},
                    "owner": {"type": "str", "default": "root"},
                    "group": {"type": "str", "default": "root"},
                },
            },
            "daemon_reload": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    try:
        entries, problems = check_entries(module.params["files"])
    except OSError as error:
        module.fail_json(msg=f"nothing was changed: cannot inspect {error.filename}: {error.strerror}",
                         changed=False, changed_paths=[], results=[], daemon_reloaded=False)
    if problems:
        module.fail_json(msg=f"nothing was changed: {len(problems)} problem(s) in files:\n"
                             + "\n".join(f"- {text}" for text in problems),
                         changed=False, changed_paths=[], results=[], problems=problems, daemon_reloaded=False)

    run = Run(module.check_mode)
    for entry in entries:
        try:
            run.apply(entry)
        except OSError as error:
            module.fail_json(msg=f"{entry.path}: {error.strerror or error} (state={entry.state}); "
                                 f"changed before the failure: {', '.join(run.changed_paths) or 'nothing'}",
                             changed=bool(run.changed_paths), changed_paths=run.changed_paths, results=run.results,
                             daemon_reloaded=False)
    reloaded = False
    if module.params["daemon_reload"] and run.changed_paths and not module.check_mode:
        rc, out, err = module.run_command([module.get_bin_path("systemctl", required=True), "daemon-reload"])
        if rc != 0:
            module.fail_json(msg=f"systemctl daemon-reload failed (rc {rc}): {(err or out).strip()}; "
                                 f"changed before the failure: {', '.join(run.changed_paths)}",
                             changed=True, changed_paths=run.changed_paths, results=run.results,
                             daemon_reloaded=False)
        reloaded = True
    result = {"changed": bool(run.changed_paths), "changed_paths": run.changed_paths, "results": run.results,
              "daemon_reloaded": reloaded}
    if module._diff and run.diff:
        result["diff"] = run.diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
