#!/usr/bin/env python
"""The collection's documentation as the Ansible ecosystem builds it (issue 31).

    tools/docs_site.py lint     antsibull-docs lint-collection-docs: the extra docs
                                (docs/docsite/), every module's DOCUMENTATION and
                                every role's argument_specs (make test: docs-lint)
    tools/docs_site.py build    the HTML site (make docs): antsibull-docs' pages of
                                every module and role entry point, plus README.md
                                and the guides of docs/ (Markdown, myst-parser),
                                built by Sphinx into .cache/docs-site/

Both run antsibull-docs and Sphinx from a virtual environment of their own,
.cache/venv-docs, with requirements-docs.txt's pins (made once, rebuilt when the
pins change). Nothing is fetched but those PyPI packages: the collection is the
checkout (through .collections), never Ansible Galaxy, and the site has no
intersphinx. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTION = "bluemind_ha.cluster"
COLLECTIONS = ROOT / ".collections"
LINK = COLLECTIONS / "ansible_collections" / "bluemind_ha" / "cluster"
REQUIREMENTS = ROOT / "requirements-docs.txt"
VENV = ROOT / ".cache" / "venv-docs"
WORK = ROOT / ".cache" / "docs-build"
SITE = ROOT / ".cache" / "docs-site"


def sh(argv: list[str], **kwargs) -> int:
    print("+ " + " ".join(str(a) for a in argv), flush=True)
    return subprocess.run([str(a) for a in argv], check=False, **kwargs).returncode


def venv() -> Path:
    """.cache/venv-docs with requirements-docs.txt, made or reused; its bin."""
    stamp = VENV / ".installed"
    pins = f"python {sys.version.split()[0]}\n" + REQUIREMENTS.read_text()
    if stamp.exists() and stamp.read_text() == pins:
        return VENV / "bin"
    if VENV.exists():
        shutil.rmtree(VENV)
    print(f"{VENV.relative_to(ROOT)}: creating from {REQUIREMENTS.name}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                         capture_output=True, text=True, check=False)
    if pip.returncode:
        print(pip.stdout + pip.stderr)
        raise SystemExit(f"pip could not install {REQUIREMENTS.name} into {VENV}")
    stamp.write_text(pins)
    return VENV / "bin"


def environment(bin_dir: Path) -> dict[str, str]:
    """antsibull-docs finds the collection as ansible-doc does: the checkout, linked
    under .collections (as `make venv` links it), and nothing else."""
    if not LINK.exists():
        LINK.parent.mkdir(parents=True, exist_ok=True)
        LINK.symlink_to("../../..")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    env.pop("VIRTUAL_ENV", None)
    return env


def lint() -> int:
    """--plugin-docs: every module's documentation and every role's argument_specs
    (schema, markup, the generated RST through rstcheck). References are checked
    against this collection and ansible.builtin (`dependent`: it has no other
    dependency), unknown collections refused. Not `all`: the linter then finds the
    collection twice, its temporary copy and .collections, and writes the copy's
    path into the modules' edit links, which fails rstcheck when that random
    directory name happens to end in "_"."""
    bin_dir = venv()
    return sh([bin_dir / "antsibull-docs", "lint-collection-docs", "--plugin-docs", "--check-extra-docs-refs",
               "--validate-collection-refs", "dependent", "--disallow-unknown-collection-refs", LINK],
              cwd=ROOT, env=environment(bin_dir))


INDEX = """\
.. _docsite_root_index:

bluemind_ha.cluster
===================

Active/passive high availability for BlueMind on two servers: one floating IP
(keepalived), storage on a shared SAN LUN or replicated with DRBD, fencing of the
peer, and a failover controller. The guides explain the pair and its operation;
the collection's pages give every module's options and every role entry point's
variables.

.. toctree::
   :maxdepth: 1
   :caption: Guides:

   README
   docs/index

.. toctree::
   :maxdepth: 2
   :caption: Collection:

   collections/index

.. toctree::
   :maxdepth: 1
   :caption: Indexes:
   :glob:

   collections/index_*
   collections/environment_variables

.. toctree::
   :hidden:
   :glob:

   docs/*
   docs/runbooks/*
   docs/benchmark/*
"""


def guides(rst: Path) -> None:
    """README.md and docs/ (guides, runbooks, examples) into the Sphinx source, at
    the same relative places, so that their links to each other resolve (Sphinx
    -W fails on one that does not)."""
    shutil.copy2(ROOT / "README.md", rst / "README.md")
    shutil.copytree(ROOT / "docs", rst / "docs", ignore=shutil.ignore_patterns("docsite"))
    repository = re.search(r"^repository:\s*(\S+)", (ROOT / "galaxy.yml").read_text(), re.M)
    for page in [rst / "README.md", *(rst / "docs").rglob("*.md")]:
        source = ROOT / page.relative_to(rst)
        text = page.read_text()

        def directory(link: re.Match) -> str:
            # A link to a directory (docs/runbooks/) is no page: the repository's view of it.
            target = (source.parent / link[1]).resolve()
            if not repository or not target.is_dir() or not target.is_relative_to(ROOT):
                return link[0]
            return f"]({repository[1]}/tree/main/{target.relative_to(ROOT).as_posix()})"
        text = re.sub(r"\]\(([^)\s:#]+/)\)", directory, text)
        # A generated fragment (the benchmark's table) has no title: its file name.
        if not text.lstrip().startswith("# "):
            text = f"# {page.stem}\n\n{text}"
        page.write_text(text)
    (rst / "index.rst").write_text(INDEX)


CONF_OFFLINE = """
# tools/docs_site.py: the guides are Markdown, and nothing is downloaded.
extensions = [e for e in extensions if e != 'sphinx.ext.intersphinx'] + ['myst_parser']
intersphinx_mapping = {}
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
myst_heading_anchors = 3

# Without intersphinx, antsibull-docs' references to ansible-core's modules and
# to the Ansible documentation's pages become links to docs.ansible.com (no
# download: the URL is computed); any other unresolved reference stays an error.
ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/latest/'
ANSIBLE_LABELS = {
    'common_return_values': 'reference_appendices/common_return_values.html',
    'ansible_configuration_settings': 'reference_appendices/config.html',
}


def _ansible_reference(app, env, node, contnode):
    import re
    from docutils import nodes
    target = node.get('reftarget', '')
    builtin = re.fullmatch(r'ansible_collections\\.ansible\\.builtin\\.(\\w+?)_(\\w+)(?:__.*)?', target)
    if builtin:
        url = f'{ANSIBLE_DOCS}collections/ansible/builtin/{builtin[1]}_{builtin[2]}.html'
    elif target in ANSIBLE_LABELS:
        url = ANSIBLE_DOCS + ANSIBLE_LABELS[target]
    else:
        return None
    reference = nodes.reference('', '', internal=False, refuri=url)
    reference.append(contnode)
    return reference


def setup(app):
    from pygments.lexers.special import TextLexer
    app.connect('missing-reference', _ansible_reference)
    # docs/architecture.md's diagrams: shown as their source (no JavaScript from a CDN).
    app.add_lexer('mermaid', TextLexer)
"""


def configure(work: Path) -> None:
    """The generated conf.py, for an offline build of Markdown guides: myst-parser,
    no intersphinx (its inventories are downloads)."""
    conf = work / "conf.py"
    text = conf.read_text()
    text = re.sub(r"^intersphinx_mapping\s*=.*?^}\s*$", "intersphinx_mapping = {}", text, flags=re.S | re.M)
    text += CONF_OFFLINE
    conf.write_text(text)


def build() -> int:
    bin_dir = venv()
    env = environment(bin_dir)
    started = time.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    WORK.chmod(0o755)  # antsibull-docs writes only into directories no one else can write to
    rc = sh([bin_dir / "antsibull-docs", "sphinx-init", "--use-current", "--fail-on-error",
             "--dest-dir", WORK, "--project", COLLECTION, "--title", f"{COLLECTION} documentation",
             "--html-short-title", COLLECTION, COLLECTION], cwd=ROOT, env=env)
    if rc:
        return rc
    configure(WORK)
    rst = WORK / "rst"
    rst.mkdir(exist_ok=True)
    rst.chmod(0o755)
    # What the generated build.sh does, the guides copied in between.
    rc = sh([bin_dir / "antsibull-docs", "--config-file", WORK / "antsibull-docs.cfg", "collection", "--use-current",
             "--fail-on-error", "--dest-dir", rst, COLLECTION], cwd=WORK, env=env)
    if rc:
        return rc
    guides(rst)
    if SITE.exists():
        shutil.rmtree(SITE)
    rc = sh([bin_dir / "sphinx-build", "-b", "html", "-c", WORK, "-W", "--keep-going", "-q", rst, SITE],
            cwd=WORK, env=env)
    if rc:
        return rc
    pages = list(SITE.rglob("*.html"))
    size = sum(p.stat().st_size for p in SITE.rglob("*") if p.is_file())
    print(f"docs site: {SITE.relative_to(ROOT)}/index.html, {len(pages)} HTML pages, {size / 1e6:.1f} MB,"
          f" {time.monotonic() - started:.0f} s")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("action", choices=["lint", "build"])
    args = parser.parse_args(argv)
    return lint() if args.action == "lint" else build()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
