"""MkDocs hook: the pages that are generated from the code, so that they cannot fall out of date.

A page holds a marker line; `on_page_markdown` replaces it:

- `<!-- api: PACKAGE -->`   one mkdocstrings block (`::: module`) per module of the package, found
  on disk through pyproject.toml's package-dir mapping (a new module appears by itself);
- `<!-- cli -->`            the `tfflows` argument parser (`tfflows.pipeline.cli.build_parser`):
  usage, and every option with its default, choices and help;
- `<!-- config -->`         `RunConfig` and its section dataclasses: every field with its type, the
  default a run gets, and the documentation of the class's `Attributes:` section;
- `<!-- readme: HEADING -->` the README section under `## HEADING` (the benchmark tables live
  there, next to the commands that measured them).

A field without documentation, a missing README section or an API package outside pyproject.toml's
package-dir is a warning, which `mkdocs build --strict` turns into a failed build.

`on_files` adds MathJax to the site (`MATHJAX_FILES`, from the `django-static-mathjax` package the
docs extra installs), so that the maths renders with no network: mkdocs.yml loads it from
`javascripts/mathjax/`, never from a CDN.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import pathlib
import re
import tomllib

log = logging.getLogger("mkdocs.plugins.tfflows")
ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- (api|cli|config|readme)(?:: (.+?))? -->$", re.MULTILINE)


# MathJax 3's files the site serves, relative to the package's es5/ folder (and its licence): TeX
# with every extension built in, the CommonHTML fonts it loads from beside itself, and the
# accessibility modules its menu may load. Not the speech rule maps (4 MB): speech stays off.
MATHJAX_FILES = ("tex-chtml-full.js", "output/chtml/fonts/woff-v2/*.woff", "a11y/*.js", "../LICENSE")
MATHJAX_SITE_DIR = "javascripts/mathjax"


def on_files(files, config):
    """Adds `MATHJAX_FILES` under `MATHJAX_SITE_DIR` (the licence as ``LICENSE``)."""
    import mathjax
    from mkdocs.structure.files import File

    es5 = pathlib.Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    for pattern in MATHJAX_FILES:
        matches = sorted(es5.glob(pattern)) if "*" in pattern else [es5 / pattern]
        if not matches or not matches[0].is_file():
            log.warning(f"docs: MathJax file {pattern} is missing from {es5}; reinstall tfflows[docs]")
        for path in matches:
            rel = path.name if pattern.startswith("..") else path.relative_to(es5).as_posix()
            files.append(File.generated(config, f"{MATHJAX_SITE_DIR}/{rel}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    def expand(match):
        kind, argument = match.group(1), match.group(2)
        if kind == "api":
            return api_blocks(argument)
        if kind == "cli":
            return cli_reference()
        if kind == "config":
            return config_reference()
        return readme_section(argument, page.file.src_uri)

    return MARKER.sub(expand, markdown)


# ----- API reference ---------------------------------------------------------------------------
def api_blocks(package: str) -> str:
    """`::: module` for the package and each of its modules, in file order (packages first)."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = next((name for name in mapping if package == name or package.startswith(name + ".")), None)
    if top is None:
        log.warning(f"docs: <!-- api: {package} --> is not under a package of pyproject.toml's package-dir")
        return ""
    folder = ROOT / mapping[top] / package[len(top):].lstrip(".").replace(".", "/")
    blocks = []
    for path in sorted(folder.rglob("*.py"), key=lambda p: (p.parent != folder, p.parent, p.name != "__init__.py", p)):
        parts = path.relative_to(folder).with_suffix("").parts
        if path.name == "__init__.py":
            parts = parts[:-1]
        elif path.name.startswith("_"):
            continue
        blocks.append(f"::: {'.'.join((package, *parts))}")
    return "\n\n".join(blocks)


# ----- CLI reference ---------------------------------------------------------------------------
def cli_reference() -> str:
    from tfflows.pipeline.cli import build_parser

    parser = build_parser()
    lines = [parser.description or "", ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    for name, command in subparsers.choices.items():
        lines += [f"## `tfflows {name}`", "", helps.get(name) or "", "",
                  "```text", command.format_usage().strip(), "```", "",
                  "| option | value | default | description |", "|---|---|---|---|"]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flags = ", ".join(f"`{flag}`" for flag in action.option_strings)
            if action.nargs == 0:  # store_true and the like
                value = "(flag)"
            elif action.choices:
                value = " \\| ".join(f"`{choice}`" for choice in action.choices)
            else:
                value = f"`{action.metavar or action.dest.upper()}`" + (" (repeatable)" if isinstance(
                    action, argparse._AppendAction) else "")
            default = "required" if action.required else ("" if action.default is None else f"`{action.default}`")
            lines.append(f"| {flags} | {value} | {default} | {_cell(action.help or '')} |")
        lines.append("")
    return "\n".join(lines)


# ----- configuration reference -----------------------------------------------------------------
def config_reference() -> str:
    from tfflows.pipeline.config import RunConfig

    run = RunConfig()
    lines = _field_table(RunConfig, run, "")
    for field in dataclasses.fields(RunConfig):
        section = getattr(run, field.name)
        if dataclasses.is_dataclass(section):
            cls = type(section)
            lines += ["", f"## `{field.name}`: `{cls.__module__}.{cls.__name__}`", "",
                      _cell(_summary(cls)), ""]
            lines += _field_table(cls, section, field.name)
    return "\n".join(lines)


def _field_table(cls, instance, prefix: str) -> list[str]:
    """One row per field: the path `--set` takes, its type, the default of a run, its documentation.

    The default is read from `instance` (what `RunConfig()` holds): RunConfig's embedded quick run
    differs from some section classes' own defaults, and the class default is then shown beside it.
    """
    docs = _attribute_docs(cls)
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        doc = docs.get(field.name)
        if doc is None:
            log.warning(f"docs: {cls.__module__}.{cls.__name__}.{field.name} has no entry in the class "
                        f"docstring's Attributes section")
            doc = ""
        default = getattr(instance, field.name)
        shown = "(section below)" if dataclasses.is_dataclass(default) else f"`{default!r}`"
        own = _class_default(field)
        if own is not dataclasses.MISSING and not dataclasses.is_dataclass(default) and own != default:
            shown += f" ({cls.__name__}: `{own!r}`)"
        path = f"{prefix}.{field.name}" if prefix else field.name
        rows.append(f"| `{path}` | `{_cell(str(field.type))}` | {shown} | {_cell(doc)} |")
    return rows


def _class_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _attribute_docs(cls) -> dict[str, str]:
    """Field name -> description, from the Google-style `Attributes:` section of the docstring.

    An entry may document several fields at once (`ingest, transform, train: ...`); continuation
    lines are indented deeper than the entry.
    """
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if line.strip() == "Attributes:"), len(lines))
    names: list[str] = []
    indent = None
    for line in lines[start:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:  # the section ended
            break
        entry = re.match(r"([\w, ]+?)(?: \(.*?\))?: (.*)", line.strip()) if depth == indent else None
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                docs[name] = entry.group(2)
        else:
            for name in names:
                docs[name] += " " + line.strip()
    return docs


def _summary(cls) -> str:
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split())


def _cell(text: str) -> str:
    """Text safe inside one Markdown table cell: one line, `|` escaped, and `<...>` outside code
    spans escaped (it would be read as an HTML tag: `serving/<version>`)."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    return "`".join(part if i % 2 else part.replace("<", "&lt;").replace(">", "&gt;") for i, part in enumerate(parts))


# ----- README sections -------------------------------------------------------------------------
def readme_section(heading: str, page_uri: str) -> str:
    """The README's `## heading ...` section, its links made relative to the docs folder."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(heading)}.*?$.*?(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    if match is None:
        log.warning(f"docs: {page_uri}: README.md has no section '## {heading}'")
        return ""
    # README links are relative to the repository root; docs/ is the site's root.
    depth = "../" * page_uri.count("/")
    return re.sub(r"\]\(docs/", f"]({depth}", match.group(0))
