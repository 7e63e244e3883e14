"""Write docs/reference.md, the options of every role, from the roles' argument_specs.

usage: python tools/role_reference.py [--check]

Reads roles/*/meta/argument_specs.yml (the same files ansible-core validates a
role's variables against) and writes one Markdown page: per role, per entry
point, a table of its options. A default that the specification leaves out but
roles/<role>/defaults/main.yml sets is shown too, marked as coming from there.

--check writes nothing: it exits 1 when docs/reference.md differs from what
this program would write (make docs, or the unit test, say so).

Test and development tool: not shipped in the collection (galaxy.yml build_ignore).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path("docs") / "reference.md"
STALE = f"{OUTPUT} is out of date: run python tools/role_reference.py"
COLUMNS = ("option", "type", "default", "required", "choices", "description")
# Ansible's documentation markup, as plain Markdown.
MARKUP = (
    (re.compile(r"[CVO]\(([^()]*)\)"), r"`\1`"),
    (re.compile(r"M\(([^()]*)\)"), r"`\1`"),
    (re.compile(r"I\(([^()]*)\)"), r"*\1*"),
    (re.compile(r"B\(([^()]*)\)"), r"**\1**"),
)


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def text(value) -> str:
    """A description (a string or a list of paragraphs) on one table line."""
    if value is None:
        return ""
    parts = value if isinstance(value, list) else [value]
    line = " ".join(" ".join(str(part).split()) for part in parts)
    for pattern, replacement in MARKUP:
        line = pattern.sub(replacement, line)
    return cell(line, code=False)


def cell(value: str, code: bool) -> str:
    """Text safe inside a table cell: no pipe, no HTML tag, no line break."""
    value = value.replace("|", "\\|").replace("\n", " ")
    if code:
        # Inline code keeps < and > as they are; backticks inside need a longer fence.
        fence = "``" if "`" in value else "`"
        pad = " " if fence == "``" else ""
        return f"{fence}{pad}{value}{pad}{fence}"
    return value.replace("<", "&lt;").replace(">", "&gt;")


def literal(value) -> str:
    """A default or a choice as YAML would read it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    if value == "":
        return "''"
    return str(value)


def type_of(spec: dict) -> str:
    kind = spec.get("type", "str")
    if spec.get("elements"):
        kind = f"{kind} of {spec['elements']}"
    return kind


def default_of(name: str, spec: dict, role_defaults: dict) -> str:
    if "default" in spec:
        return cell(literal(spec["default"]), code=True)
    # A required option's entry in defaults/main.yml is a placeholder, not a default.
    if name in role_defaults and not spec.get("required"):
        value = role_defaults[name]
        shown = " ".join(value.split()) if isinstance(value, str) else literal(value)
        return cell(shown, code=True) + " (defaults/main.yml)"
    return ""


def options_table(options: dict, role_defaults: dict) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for name, spec in options.items():
        spec = spec or {}
        choices = ", ".join(cell(literal(c), code=True) for c in spec.get("choices", []))
        row = (cell(name, code=True), type_of(spec), default_of(name, spec, role_defaults),
               "yes" if spec.get("required") else "", choices, text(spec.get("description")))
        if spec.get("no_log"):
            row = row[:-1] + ((row[-1] + " " if row[-1] else "") + "Secret: never logged.",)
        lines.append("| " + " | ".join(row) + " |")
    return lines


def entry_points(specs: dict) -> list[str]:
    """main first, then the other entry points in the order of the file."""
    order = list(specs)
    return sorted(order, key=lambda name: (name != "main", order.index(name)))


def role_section(role: Path) -> list[str]:
    specs = load_yaml(role / "meta" / "argument_specs.yml").get("argument_specs") or {}
    defaults_file = role / "defaults" / "main.yml"
    role_defaults = load_yaml(defaults_file) if defaults_file.is_file() else {}
    fqcn = f"bluemind_ha.cluster.{role.name}"
    lines = [f"## {fqcn}", ""]
    seen = {}
    for entry in entry_points(specs):
        spec = specs[entry] or {}
        options = spec.get("options") or {}
        call = f"`{fqcn}`" if entry == "main" else f"`{fqcn}`, `tasks_from: {entry}`"
        lines += [f"### {role.name}: entry point `{entry}`", "", f"Called as {call}."]
        if spec.get("short_description"):
            lines += ["", text(spec["short_description"]).rstrip(".") + "."]
        if spec.get("description"):
            lines += ["", text(spec["description"])]
        lines.append("")
        same = next((other for other, opts in seen.items() if opts == options), None)
        if not options:
            lines += ["No options.", ""]
        elif same:
            lines += [f"Same options as the entry point `{same}`.", ""]
        else:
            lines += options_table(options, role_defaults) + [""]
        seen[entry] = options
    return lines


def render(root: Path = ROOT) -> str:
    roles = sorted(p.parents[1] for p in (root / "roles").glob("*/meta/argument_specs.yml"))
    lines = [
        "<!-- Generated by tools/role_reference.py from roles/*/meta/argument_specs.yml. Do not edit:",
        "     change the argument_specs, then run `make docs` (python tools/role_reference.py). -->",
        "",
        "# Role reference",
        "",
        "Every option of every role of `bluemind_ha.cluster`, per entry point, as the roles'",
        "`meta/argument_specs.yml` declare them (ansible-core checks the variables against",
        "them when the role runs). `ansible-doc -t role bluemind_ha.cluster.NAME` shows the",
        "same. A default marked *(defaults/main.yml)* is not in the specification but in the",
        "role's `defaults/main.yml`; most of these are worked out from other variables at run",
        "time. An option with no default and not required is simply unset unless you set it.",
        "",
        "The playbooks' own variables (`bluemind_ha_switchover_to`, ...) are in",
        "[operations.md](operations.md).",
        "",
        "| role | entry points |",
        "| --- | --- |",
    ]
    for role in roles:
        specs = load_yaml(role / "meta" / "argument_specs.yml").get("argument_specs") or {}
        entries = ", ".join(f"`{e}`" for e in entry_points(specs))
        lines.append(f"| [{role.name}](#{anchor('bluemind_ha.cluster.' + role.name)}) | {entries} |")
    lines.append("")
    for role in roles:
        lines += role_section(role)
    return "\n".join(lines).rstrip("\n") + "\n"


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def check(target: Path, root: Path = ROOT) -> int:
    """0 when target holds what render() writes, else 1 with the message."""
    wanted = render(root)
    try:
        current = target.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != wanted:
        print(STALE, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args not in ([], ["--check"]):
        print("usage: python tools/role_reference.py [--check]", file=sys.stderr)
        return 2
    target = ROOT / OUTPUT
    if args == ["--check"]:
        return check(target)
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
