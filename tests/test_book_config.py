"""The book's configuration agrees with itself: one repository URL, notebooks stored clean, toc complete."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
REPO_URL = CONFIG["repository"]["url"]


def toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        if "file" in node:
            out.append(node["file"])
        for value in node.values():
            out += toc_files(value)
    elif isinstance(node, list):
        for value in node:
            out += toc_files(value)
    return out


def test_config_basics():
    assert CONFIG["title"] == "Fair DARTS, hands-on"
    assert CONFIG["author"] == "the Fair DARTS, hands-on contributors"
    assert CONFIG["execute"]["execute_notebooks"] == "force"
    assert CONFIG["execute"]["allow_errors"] is False
    assert CONFIG["execute"]["timeout"] > 0
    assert REPO_URL.startswith("https://github.com/") and not REPO_URL.endswith((".git", "/"))
    assert CONFIG["launch_buttons"]["colab_url"] and CONFIG["launch_buttons"]["binderhub_url"]
    assert "sphinx_exercise" in CONFIG["sphinx"]["extra_extensions"]
    for folder in ("tests", "data", ".venv", "fairdarts_core", "_build"):
        assert folder in CONFIG["exclude_patterns"]


def test_repository_url_written_once_in_config():
    assert (ROOT / "_config.yml").read_text().count(REPO_URL) == 1


def test_toc_files_exist_and_every_chapter_is_listed():
    files = [TOC["root"]] + toc_files(TOC.get("parts", []))
    for f in files:
        assert any((ROOT / (f + ext)).is_file() for ext in ("", ".md", ".ipynb")), f"{f} is in _toc.yml but missing"
    listed = {Path(f).with_suffix("").as_posix() for f in files}
    for page in NOTEBOOKS + sorted((ROOT / "book").glob("*.md")):
        assert page.relative_to(ROOT).with_suffix("").as_posix() in listed, \
            f"{page.name} is in book/ but not in _toc.yml (the build would leave it out silently)"


def test_bibliography_has_the_papers():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = re.findall(r"@\w+\{([^,]+),", bib)
    assert len(keys) == len(set(keys))
    for title in ("DARTS}: Differentiable", "Fair {DARTS}", "Progressive Differentiable", "{PC-DARTS}",
                  "Robustifying", "{SNAS}", "Four {GPU} Hours", "Noisy Differentiable", "{DARTS-}"):
        assert title in bib, title
    for f in [TOC["root"]] + toc_files(TOC.get("parts", [])):
        for path in (ROOT / (f + ".md"), ROOT / (f + ".ipynb")):
            if path.is_file():
                for key in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()):
                    for k in key.split(","):
                        assert k.strip() in keys, f"{path.name} cites unknown key {k}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_from_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code", "the first cell must be the install cell"
    src = first.source
    urls = re.findall(r"git\+(https?://[^\s\"'@#]+)", src)
    assert urls == [REPO_URL], f"{path.name}: first cell installs from {urls}, _config.yml says {REPO_URL}"
    assert "import fairdarts_core" in src and "except ImportError" in src, \
        "the install must happen only when `import fairdarts_core` fails"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has stored outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state (it is saved at build time)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_have_one_paper_switch(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert len(re.findall(r"^PAPER_SETTING\s*=\s*False\b", code, flags=re.M)) == 1, \
        f"{path.name}: needs exactly one `PAPER_SETTING = False` switch"
