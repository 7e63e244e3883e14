"""tools/docs_site.py: the documentation site builds offline (no intersphinx
inventory to download), reads the Markdown guides, sends their links to a
directory to the repository, and gives a generated guide without a heading a
title (Sphinx refuses both under -W)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("docs_site", ROOT / "tools" / "docs_site.py")
docs_site = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(docs_site)

# The part of the conf.py `antsibull-docs sphinx-init` writes that matters here.
GENERATED_CONF = """\
project = 'Ansible collections'
extensions = ['sphinx.ext.autodoc', 'sphinx.ext.intersphinx', 'sphinx_antsibull_ext']
intersphinx_mapping = {
    'python3': ('https://docs.python.org/3/', (None, '../python3.inv')),
    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', (None, '../ansible_devel.inv')),
}
nitpicky = True
"""


def test_the_site_configuration_downloads_nothing_and_reads_markdown(tmp_path):
    (tmp_path / "conf.py").write_text(GENERATED_CONF)
    docs_site.configure(tmp_path)
    text = (tmp_path / "conf.py").read_text()
    assert "https://docs.python.org" not in text
    conf = {}
    exec(compile(text, "conf.py", "exec"), conf)  # pylint: disable=exec-used
    assert conf["intersphinx_mapping"] == {}
    assert "sphinx.ext.intersphinx" not in conf["extensions"]
    assert {"myst_parser", "sphinx_antsibull_ext"} <= set(conf["extensions"])
    assert conf["source_suffix"][".md"] == "markdown"
    assert conf["nitpicky"] is True


def test_the_guides_land_beside_the_readme_and_a_page_without_heading_gets_its_name(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    (root / "docs" / "benchmark").mkdir(parents=True)
    (root / "docs" / "docsite").mkdir()
    (root / "galaxy.yml").write_text("namespace: bluemind_ha\nrepository: https://github.com/bluemind-ha/cluster\n")
    (root / "README.md").write_text("# project\n\nSee [the guides](docs/index.md), [runs](docs/benchmark/).\n")
    (root / "docs" / "index.md").write_text("# Documentation\n\n[back](../README.md)\n")
    (root / "docs" / "benchmark" / "failover-report.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    (root / "docs" / "docsite" / "links.yml").write_text("---\n")
    monkeypatch.setattr(docs_site, "ROOT", root)
    rst = tmp_path / "rst"
    rst.mkdir()
    docs_site.guides(rst)
    # A link to a directory, no page of the site, goes to the repository's view of it.
    assert (rst / "README.md").read_text() == (
        "# project\n\nSee [the guides](docs/index.md),"
        " [runs](https://github.com/bluemind-ha/cluster/tree/main/docs/benchmark).\n")
    assert (rst / "docs" / "index.md").read_text().startswith("# Documentation")
    assert (rst / "docs" / "benchmark" / "failover-report.md").read_text().startswith("# failover-report\n\n| a | b |")
    assert not (rst / "docs" / "docsite").exists()
    index = (rst / "index.rst").read_text()
    assert "   README\n   docs/index\n" in index and "   collections/index\n" in index
