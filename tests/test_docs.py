"""The documentation: docstring examples run as doctests, and the MkDocs site builds without a
warning and documents every public name."""

from __future__ import annotations

import ast
import dataclasses
import doctest
import html
import importlib
import os
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import tfflows.components
import tfflows.models
import tfflows.pipeline
from tfflows.pipeline.config import RunConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
# Public functions whose docstrings must keep a runnable example (the doctest below runs every
# example in tfflows; this list keeps the main entry points from silently losing theirs).
WITH_EXAMPLES = ["tfflows.models.flows.build_flow", "tfflows.models.masks.input_order",
                 "tfflows.models.masks.hidden_degrees", "tfflows.models.masks.made_masks"]


def _modules(package) -> list[str]:
    return [package.__name__] + [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    found = {}
    for name in [m for package in (tfflows.models, tfflows.components, tfflows.pipeline) for m in _modules(package)]:
        module = importlib.import_module(name)
        for test in finder.find(module):
            if test.examples:
                found[test.name] = len(test.examples)
                runner.run(test)
    missing = [name for name in WITH_EXAMPLES if not found.get(name)]
    assert not missing, f"these public functions lost their docstring examples: {missing}"
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} docstring examples failed (output above)"


def _public_names(package) -> tuple[list[str], list[str]]:
    """(`module.name` for each name of a module's `__all__` that the module defines, bare names of
    those it re-exports from elsewhere). Read from the source: a lazy re-export (module
    `__getattr__`) is not a definition."""
    defined, reexported = [], []
    for name in _modules(package):
        module = importlib.import_module(name)
        tree = ast.parse(pathlib.Path(module.__file__).read_text())
        top = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            top |= {target.id for target in targets if isinstance(target, ast.Name)}
        for public in getattr(module, "__all__", ()):
            if public in top:
                defined.append(f"{name}.{public}")
            else:
                reexported.append(public)
    return defined, reexported


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once with `mkdocs build --strict`: it must build without a warning."""
    site = tmp_path_factory.mktemp("docs") / "site"
    build = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mkdocs"), "build", "--strict",
                            "--site-dir", str(site)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    assert "WARNING" not in re.sub(r"WARNING: All log messages before absl.*", "", build.stderr)
    return site


@pytest.mark.slow
def test_site_builds_strict_and_covers_every_public_name(site):
    api = {page: (site / "api" / page / "index.html").read_text() for page in ("models", "components", "pipeline")}
    anchors = set(re.findall(r'id="(tfflows\.[^"]+)"', "".join(api.values())))
    for page, package in (("models", tfflows.models), ("components", tfflows.components),
                          ("pipeline", tfflows.pipeline)):
        defined, reexported = _public_names(package)
        assert defined, package.__name__
        undocumented = [name for name in defined if f'id="{name}"' not in api[page]]
        assert not undocumented, f"api/{page}: no entry for {undocumented}"
        # A re-exported name is documented where it is defined (if not also under the package).
        unresolved = [name for name in reexported if not any(a.endswith("." + name) for a in anchors)]
        assert not unresolved, f"api/{page}: re-exported but documented nowhere: {unresolved}"

    # Generated pages: every CLI command and option, every configuration field, the benchmark tables.
    cli = (site / "cli" / "index.html").read_text()
    for text in ("tfflows run", "tfflows evaluate", "tfflows sample", "tfflows ui", "tfflows compile",
                 "--set", "--dataset", "--scores", "--image"):
        assert text in cli, text
    configuration = (site / "configuration" / "index.html").read_text()
    for field in dataclasses.fields(RunConfig):
        section = getattr(RunConfig(), field.name)
        paths = [f"{field.name}.{f.name}" for f in dataclasses.fields(section)] if dataclasses.is_dataclass(
            section) else [field.name]
        for path in paths:
            assert f"<code>{path}</code>" in configuration, path
    assert "glibc reaches 2.39" in (site / "index.html").read_text()  # README's Installing section
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "MAF sampling, 100 samples" in benchmarks and "HAF (5) 70 %" in benchmarks
    assert (site / "vi" / "U1.png").exists() and 'src="../vi/U1.png"' in benchmarks

    # Maths: arithmatex marks it for MathJax, which the page loads (`test_maths_renders_offline`).
    library = (site / "quickstart-library" / "index.html").read_text()
    assert 'class="arithmatex"' in library and "javascripts/mathjax/tex-chtml-full.js" in library


DISPLAY_MATHS = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.DOTALL)  # a ```math fence, rendered


@pytest.mark.slow
def test_docstring_maths_renders(site):
    """Every ```math fence of a docstring of tfflows.models becomes an arithmatex block (its LaTeX
    between \\[ \\] for MathJax, not a code block), e.g. LULinear's forward, inverse and log-det."""
    fences = set()
    for name in _modules(tfflows.models):
        tree = ast.parse(pathlib.Path(importlib.import_module(name).__file__).read_text())
        # (private names are not documented on the site: filters "!^_")
        for node in ast.walk(tree):
            if isinstance(node, ast.Module) or (isinstance(node, (ast.ClassDef, ast.FunctionDef))
                                                and not node.name.startswith("_")):
                fences |= {f.strip() for f in re.findall(r"```math\n(.*?)```", ast.get_docstring(node) or "", re.DOTALL)}
    page = (site / "api" / "models" / "index.html").read_text()
    blocks = DISPLAY_MATHS.findall(page)
    assert fences and {html.unescape(block).strip() for block in blocks} == fences
    assert "```math" not in page and "language-math" not in page

    lu = page.split('id="tfflows.models.bijectors.linear.LULinear"', 1)[1].split('class="doc doc-children"', 1)[0]
    (equation,) = DISPLAY_MATHS.findall(lu)
    assert r"x = W u + b" in equation and r"\sum_i \log d_i" in equation and r"U^{-1} L^{-1} P^\top" in equation
    assert 'class="arithmatex">\\(W = P L U\\)</span>' in lu  # inline maths too
    assert "javascripts/mathjax/tex-chtml-full.js" in page and "javascripts/mathjax.js" in page


# A page's scripts and stylesheets: (tag, URL).
ASSETS = re.compile(r'<(script|link)\b[^>]*?\b(?:src|href)="([^"]+)"')
# What the maths needs, relative to the site: MathJax, its fonts (loaded from beside it) and licence.
MATHJAX_SITE_FILES = ("javascripts/mathjax/tex-chtml-full.js", "javascripts/mathjax/LICENSE",
                      "javascripts/mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff",
                      "javascripts/mathjax/output/chtml/fonts/woff-v2/MathJax_Math-Italic.woff")


@pytest.mark.slow
def test_maths_renders_offline(site):
    """No page loads its maths from the network (the site used to take MathJax from a CDN: offline,
    every formula showed as raw LaTeX); MathJax and its fonts are in the site, and every page's
    MathJax script resolves to that file."""
    for path in MATHJAX_SITE_FILES:
        assert (site / path).is_file() and (site / path).stat().st_size > 0, path
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 5
    for page in pages:
        assets = ASSETS.findall(page.read_text())
        remote_maths = [url for _, url in assets if url.startswith(("http:", "https:", "//"))
                        and re.search(r"mathjax|katex|tex-|chtml", url, re.IGNORECASE)]
        assert not remote_maths, f"{page.relative_to(site)} loads its maths from the network: {remote_maths}"
        scripts = [url for tag, url in assets if tag == "script" and url.endswith("tex-chtml-full.js")]
        if page.name == "index.html" and page.parent.name != "search":
            assert len(scripts) == 1, f"{page.relative_to(site)}: MathJax script {scripts}"
            assert (page.parent / scripts[0]).resolve() == (site / MATHJAX_SITE_FILES[0]).resolve(), scripts
