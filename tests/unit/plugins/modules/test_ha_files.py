"""ha_files on a real directory tree (tmp_path): entries handled in order, written only
when they differ, check and diff modes, and every invalid list refused before any change."""
import grp
import os
import pwd
import stat

import pytest

from ansible_collections.bluemind_ha.cluster.plugins.modules import ha_files

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def entry(path, state="file", **options):
    """One item of the files option, owned by whoever runs the tests."""
    item = {"path": str(path), "state": state, "owner": OWNER, "group": GROUP}
    if state != "absent":
        item["mode"] = "0755" if state == "directory" else "0644"
    item.update(options)
    return item


@pytest.fixture()
def files(run_module):
    """files(entries, check=False, diff=False) -> (failed, result)."""
    def run(entries, check=False, diff=False):
        failed, result, dummy = run_module(ha_files, {"files": entries, "_ansible_check_mode": check,
                                                      "_ansible_diff": diff})
        return failed, result
    return run


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree(root):
    """Every path under root, relative, with what it is: what a run left on disk."""
    found = {}
    for directory, subdirs, names in os.walk(root):
        for name in subdirs + names:
            full = os.path.join(directory, name)
            found[os.path.relpath(full, root)] = ("link" if os.path.islink(full) else
                                                  "dir" if os.path.isdir(full) else "file")
    return found


def unit_set(tmp_path):
    """A role's small files: a directory and what goes in it, in that order."""
    unit_dir = tmp_path / "unit.d"
    return [
        entry(unit_dir, "directory", mode="0750"),
        entry(unit_dir / "override.conf", content="[Service]\nTimeoutStopSec=300\n", mode="0640"),
        entry(tmp_path / "wrapper", content="#!/bin/sh\nexec true\n", mode="0755"),
    ]


def test_creates_the_directory_then_its_files_and_a_second_run_changes_nothing(files, tmp_path):
    failed, result = files(unit_set(tmp_path))
    assert not failed and result["changed"] is True
    paths = [str(tmp_path / "unit.d"), str(tmp_path / "unit.d" / "override.conf"), str(tmp_path / "wrapper")]
    assert result["changed_paths"] == paths
    assert result["results"] == [{"path": paths[0], "state": "directory", "changed": True},
                                 {"path": paths[1], "state": "file", "changed": True},
                                 {"path": paths[2], "state": "file", "changed": True}]
    assert (tmp_path / "unit.d" / "override.conf").read_text() == "[Service]\nTimeoutStopSec=300\n"
    assert [mode_of(p) for p in paths] == [0o750, 0o640, 0o755]
    assert all(os.lstat(p).st_uid == os.getuid() and os.lstat(p).st_gid == os.getgid() for p in paths)
    inode = os.lstat(paths[1]).st_ino

    failed, result = files(unit_set(tmp_path))
    assert not failed and result["changed"] is False and result["changed_paths"] == []
    assert [r["changed"] for r in result["results"]] == [False, False, False]
    assert os.lstat(paths[1]).st_ino == inode, "an unchanged file must not be rewritten"
    assert tree(tmp_path) == {"unit.d": "dir", "unit.d/override.conf": "file", "wrapper": "file"}


def test_a_new_content_replaces_the_file_atomically_and_only_that_file(files, tmp_path):
    files(unit_set(tmp_path))
    conf = tmp_path / "unit.d" / "override.conf"
    inode = os.lstat(conf).st_ino
    wanted = unit_set(tmp_path)
    wanted[1]["content"] = "[Service]\nTimeoutStopSec=600\n"
    failed, result = files(wanted)
    assert not failed and result["changed_paths"] == [str(conf)]
    assert conf.read_text() == "[Service]\nTimeoutStopSec=600\n"
    assert mode_of(conf) == 0o640
    assert os.lstat(conf).st_ino != inode, "a new content goes through a temporary file renamed over the path"
    assert tree(tmp_path) == {"unit.d": "dir", "unit.d/override.conf": "file", "wrapper": "file"}, \
        "no temporary file left behind"


def test_a_mode_change_alone_fixes_the_mode_without_rewriting(files, tmp_path):
    files(unit_set(tmp_path))
    conf = tmp_path / "unit.d" / "override.conf"
    inode = os.lstat(conf).st_ino
    wanted = unit_set(tmp_path)
    wanted[1]["mode"] = "0600"
    wanted[0]["mode"] = "755"
    failed, result = files(wanted, diff=True)
    assert not failed and result["changed_paths"] == [str(tmp_path / "unit.d"), str(conf)]
    assert mode_of(conf) == 0o600 and mode_of(tmp_path / "unit.d") == 0o755
    assert os.lstat(conf).st_ino == inode
    assert result["diff"][1] == {"before_header": str(conf), "after_header": str(conf),
                                 "before": f"mode 0640\nowner {OWNER}\ngroup {GROUP}\n",
                                 "after": f"mode 0600\nowner {OWNER}\ngroup {GROUP}\n"}
    assert "mode 0750" in result["diff"][0]["before"] and "mode 0755" in result["diff"][0]["after"]


def test_check_mode_changes_nothing_and_reports_what_a_real_run_changes(files, tmp_path):
    failed, checked = files(unit_set(tmp_path), check=True)
    assert not failed and checked["changed"] is True
    assert tree(tmp_path) == {}, "check mode must not create anything"
    failed, real = files(unit_set(tmp_path))
    assert checked["changed_paths"] == real["changed_paths"] and len(real["changed_paths"]) == 3
    assert checked["results"] == real["results"]

    wanted = unit_set(tmp_path)
    wanted[1].update(mode="0600", content="other\n")
    wanted.append(entry(tmp_path / "wrapper", "absent"))
    del wanted[2]
    failed, checked = files(wanted, check=True)
    conf = tmp_path / "unit.d" / "override.conf"
    assert not failed and checked["changed_paths"] == [str(conf), str(tmp_path / "wrapper")]
    assert mode_of(conf) == 0o640 and conf.read_text() == "[Service]\nTimeoutStopSec=300\n"
    assert (tmp_path / "wrapper").exists()
    failed, real = files(wanted)
    assert real["changed_paths"] == checked["changed_paths"]


def test_diff_mode_gives_the_old_and_new_content(files, tmp_path):
    path = tmp_path / "motd"
    path.write_text("old line\n")
    os.chmod(path, 0o644)
    failed, result = files([entry(path, content="new line\n")], diff=True)
    assert not failed
    assert result["diff"] == [{"before_header": str(path), "after_header": str(path),
                               "before": "old line\n", "after": "new line\n"}]
    failed, result = files([entry(path, content="new line\n")], diff=True)
    assert not failed and "diff" not in result, "nothing changed, nothing to show"
    failed, result = files([entry(path, content="third\n", mode="0600")])
    assert not failed and "diff" not in result, "no diff unless diff mode is on"


def test_diff_mode_of_new_entries_and_removals(files, tmp_path):
    (tmp_path / "gone").write_text("x\n")
    failed, result = files([entry(tmp_path / "d", "directory", mode="0700"),
                            entry(tmp_path / "d" / "f", content="hello\n"),
                            entry(tmp_path / "gone", "absent")], diff=True)
    assert not failed
    directory, new, gone = result["diff"]
    assert (directory["before"], directory["after"]) == (
        "absent\n", f"directory\nmode 0700\nowner {OWNER}\ngroup {GROUP}\n")
    assert new["before"] == "" and new["after"] == "hello\n"
    assert new["before_header"] == f"{tmp_path / 'd' / 'f'} (absent)"
    assert new["after_header"] == f"{tmp_path / 'd' / 'f'} (mode 0644, owner {OWNER}, group {GROUP})"
    assert (gone["before"], gone["after"]) == ("file\n", "absent\n")


def test_absent_removes_a_file_and_a_missing_path_is_unchanged(files, tmp_path):
    (tmp_path / "old.service").write_text("[Unit]\n")
    failed, result = files([entry(tmp_path / "old.service", "absent"), entry(tmp_path / "never", "absent")])
    assert not failed and result["changed_paths"] == [str(tmp_path / "old.service")]
    assert [r["changed"] for r in result["results"]] == [True, False]
    assert tree(tmp_path) == {}
    failed, result = files([entry(tmp_path / "old.service", "absent")])
    assert not failed and result["changed"] is False and result["changed_paths"] == []


def test_absent_removes_a_link_not_its_target(files, tmp_path):
    (tmp_path / "target").write_text("kept\n")
    os.symlink(tmp_path / "target", tmp_path / "link")
    failed, result = files([entry(tmp_path / "link", "absent")])
    assert not failed and result["changed_paths"] == [str(tmp_path / "link")]
    assert tree(tmp_path) == {"target": "file"} and (tmp_path / "target").read_text() == "kept\n"


def test_a_link_where_a_file_is_wanted_is_replaced_and_its_target_kept(files, tmp_path):
    (tmp_path / "target").write_text("kept\n")
    os.symlink(tmp_path / "target", tmp_path / "unit")
    failed, result = files([entry(tmp_path / "unit", content="[Unit]\n")])
    assert not failed and result["changed_paths"] == [str(tmp_path / "unit")]
    assert tree(tmp_path) == {"target": "file", "unit": "file"}
    assert (tmp_path / "target").read_text() == "kept\n" and (tmp_path / "unit").read_text() == "[Unit]\n"


def test_absent_removes_a_directory_emptied_by_earlier_entries(files, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    failed, result = files([entry(tmp_path / "d" / "f", "absent"), entry(tmp_path / "d", "absent")])
    assert not failed and result["changed_paths"] == [str(tmp_path / "d" / "f"), str(tmp_path / "d")]
    assert tree(tmp_path) == {}


def refused(files, tmp_path, entries, *words):
    """Runs a valid first entry then the given ones: the run must fail naming each word,
    and the first entry must not have been written."""
    first = tmp_path / "first.conf"
    failed, result = files([entry(first, content="written only if all entries are valid\n"), *entries])
    assert failed, result
    for word in words:
        assert str(word) in result["msg"], result["msg"]
    assert result["changed"] is False and result["changed_paths"] == []
    assert not first.exists(), "validation must come before any change"
    return result


def test_numeric_owner_and_group_are_accepted(files, tmp_path):
    wanted = [entry(tmp_path / "f", content="x\n", owner=str(os.getuid()), group=str(os.getgid()))]
    failed, result = files(wanted)
    assert not failed and result["changed_paths"] == [str(tmp_path / "f")]
    assert os.lstat(tmp_path / "f").st_uid == os.getuid()
    failed, result = files(wanted)
    assert not failed and result["changed"] is False


def test_a_file_in_a_directory_removed_by_an_earlier_entry_is_refused(files, tmp_path):
    (tmp_path / "d").mkdir()
    refused(files, tmp_path, [entry(tmp_path / "d", "absent"), entry(tmp_path / "d" / "f", content="x\n")],
            tmp_path / "d" / "f", "removed by an earlier entry")
    assert (tmp_path / "d").is_dir()


def test_a_file_in_a_missing_directory_is_refused_before_any_change(files, tmp_path):
    missing = tmp_path / "missing"
    result = refused(files, tmp_path, [entry(missing / "f.conf", content="x\n")],
                     missing / "f.conf", "list", "state=directory")
    assert not missing.exists(), "parents are never created implicitly"
    assert len(result["problems"]) == 1


def test_a_directory_listed_after_its_file_does_not_count(files, tmp_path):
    refused(files, tmp_path, [entry(tmp_path / "d" / "f", content="x\n"), entry(tmp_path / "d", "directory")],
            tmp_path / "d" / "f", "does not exist")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("mode", ["644x", "0999", "rw-r--r--", "12", "006444", "", 420],
                         ids=["letter", "not octal", "symbolic", "too short", "too long", "empty", "unquoted"])
def test_a_bad_mode_is_refused_before_any_change(files, tmp_path, mode):
    refused(files, tmp_path, [entry(tmp_path / "bad", content="x\n", mode=mode)], tmp_path / "bad", "mode")
    assert not (tmp_path / "bad").exists()


def test_a_missing_mode_is_refused(files, tmp_path):
    item = entry(tmp_path / "d", "directory")
    del item["mode"]
    refused(files, tmp_path, [item], tmp_path / "d", "mode is required")


def test_content_with_state_directory_is_refused(files, tmp_path):
    refused(files, tmp_path, [entry(tmp_path / "d", "directory", content="x")],
            tmp_path / "d", "content is only allowed with state=file")
    assert not (tmp_path / "d").exists()


def test_a_file_without_content_is_refused(files, tmp_path):
    refused(files, tmp_path, [entry(tmp_path / "f")], tmp_path / "f", "content is required")


@pytest.mark.parametrize("spelling", ["{}", "{}/", "{}/./"])
def test_a_path_listed_twice_is_refused(files, tmp_path, spelling):
    twice = tmp_path / "twice"
    refused(files, tmp_path, [entry(twice, content="a\n"), entry(spelling.format(twice), content="b\n")],
            twice, "more than once")
    assert not twice.exists()


def test_a_relative_path_is_refused(files, tmp_path):
    refused(files, tmp_path, [entry("etc/relative.conf", content="x\n")], "etc/relative.conf", "absolute")


@pytest.mark.parametrize("field", ["owner", "group"])
def test_an_unknown_owner_or_group_is_refused(files, tmp_path, field):
    refused(files, tmp_path, [entry(tmp_path / "f", content="x\n", **{field: "no-such-name-bmha"})],
            tmp_path / "f", "no-such-name-bmha")


def test_a_file_where_a_directory_exists_is_refused(files, tmp_path):
    (tmp_path / "conf").mkdir()
    refused(files, tmp_path, [entry(tmp_path / "conf", content="x\n")], tmp_path / "conf", "is a directory")
    assert (tmp_path / "conf").is_dir()


def test_a_directory_where_a_file_exists_is_refused(files, tmp_path):
    (tmp_path / "conf").write_text("kept\n")
    refused(files, tmp_path, [entry(tmp_path / "conf", "directory")], tmp_path / "conf", "not a directory")
    assert (tmp_path / "conf").read_text() == "kept\n"


def test_a_non_empty_directory_is_not_removed(files, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    refused(files, tmp_path, [entry(tmp_path / "d", "absent")], tmp_path / "d", "not empty")
    assert (tmp_path / "d" / "keep").read_text() == "x"


def test_every_problem_is_listed_at_once(files, tmp_path):
    result = refused(files, tmp_path, [entry(tmp_path / "a", content="x\n", mode="rw"),
                                       entry(tmp_path / "b", "directory", content="y")],
                     tmp_path / "a", tmp_path / "b")
    assert len(result["problems"]) == 2


def test_an_empty_list_changes_nothing(files):
    failed, result = files([])
    assert not failed and result == {"changed": False, "changed_paths": [], "results": [], "daemon_reloaded": False}


@pytest.fixture()
def systemctl(monkeypatch):
    """Records the commands the module runs; rc is what systemctl answers."""
    from ansible.module_utils import basic
    calls = {"argv": [], "rc": 0}

    def run_command(self, argv, **kwargs):
        calls["argv"].append(list(argv))
        return calls["rc"], "", "Failed to reload daemon: Access denied" if calls["rc"] else ""
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False: f"/usr/bin/{name}")
    return calls


def reload_run(run_module, entries, check=False):
    failed, result, dummy = run_module(ha_files, {"files": entries, "daemon_reload": True,
                                                  "_ansible_check_mode": check})
    return failed, result


def test_daemon_reload_runs_once_after_a_change_and_not_on_a_second_run(run_module, systemctl, tmp_path):
    failed, result = reload_run(run_module, unit_set(tmp_path))
    assert not failed and result["changed"] and result["daemon_reloaded"] is True
    assert systemctl["argv"] == [["/usr/bin/systemctl", "daemon-reload"]]
    failed, result = reload_run(run_module, unit_set(tmp_path))
    assert not failed and not result["changed"] and result["daemon_reloaded"] is False
    assert len(systemctl["argv"]) == 1, "nothing changed: nothing to reload"


def test_daemon_reload_is_off_by_default_and_in_check_mode(run_module, files, systemctl, tmp_path):
    failed, result = files(unit_set(tmp_path))
    assert not failed and result["changed"] and result["daemon_reloaded"] is False
    failed, result = reload_run(run_module, [entry(tmp_path / "other.conf", content="x\n")], check=True)
    assert not failed and result["changed"] and result["daemon_reloaded"] is False
    assert systemctl["argv"] == []


def test_a_failed_daemon_reload_fails_naming_what_changed(run_module, systemctl, tmp_path):
    systemctl["rc"] = 1
    failed, result = reload_run(run_module, unit_set(tmp_path))
    assert failed and result["changed"] is True and result["daemon_reloaded"] is False
    assert "daemon-reload failed (rc 1): Failed to reload daemon: Access denied" in result["msg"]
    assert str(tmp_path / "wrapper") in result["msg"]
    assert (tmp_path / "wrapper").exists(), "the files written stay written"
