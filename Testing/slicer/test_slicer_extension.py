"""The extension as the Slicer Extensions Index and Slicer's build see it, offline.

The Index checks each catalog entry with ``scripts/check_description_files.py`` of Slicer/ExtensionsIndex: the entry
against the JSON schema its ``$schema`` names, LF line endings, the extension and repository names, the category,
the ``scm_url``, a licence file, a repository under 100 MB, and the top-level ``CMakeLists.txt`` through regular
expressions (``project()`` named as the entry, ``EXTENSION_ICONURL`` and ``EXTENSION_SCREENSHOTURLS`` set to
non-empty quoted URLs that download as images). Those rules are restated and applied here to ``Resources/RegSeg.json``
(the copy of the entry) and ``CMakeLists.txt``; what needs the published repository (URLs that resolve, the
``3d-slicer-extension`` topic) is the README's release checklist. The image URLs are checked to name images
committed here at the entry's revision.

The CMake files are also configured and installed against a stand-in Slicer (``extension_build``): Slicer 5.10 and
later are accepted, 5.8 is refused.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

import extension_build

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CMAKE = REPOSITORY_ROOT / "CMakeLists.txt"
CATALOG_ENTRY = REPOSITORY_ROOT / "Resources" / "RegSeg.json"
EXTENSION_NAME = CATALOG_ENTRY.stem
"""The Index names an extension after its entry file."""

CATALOG_SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
CATALOG_RULES = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "enum": [1, 3, 5]},
    },
}
"""Version 1.0.1 of the catalog entry schema (Slicer's ``Schemas/``), restated."""

INDEX_PATTERNS = {
    "project": r"project\s*\(\s*([^\s)]+)",
    "EXTENSION_ICONURL": r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)" *\)',
    "EXTENSION_SCREENSHOTURLS": r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)',
}
"""What the Index's CMakeLists.txt check must find (first match, case-insensitive, multi-line)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
MINIMUM_SLICER = "5.10"


def catalog_entry() -> dict:
    return json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))


def index_match(name: str) -> str | None:
    """The first value the Index's pattern for ``name`` finds in the top-level CMakeLists.txt, or ``None``."""
    found = re.findall(INDEX_PATTERNS[name], CMAKE.read_text(encoding="utf-8"), re.IGNORECASE | re.MULTILINE)
    return found[0].strip().strip("\"'") if found else None


def cmake_variable(name: str) -> str:
    match = re.search(rf'^set\({name} "([^"]*)"\)$', CMAKE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"no set({name} \"...\") in CMakeLists.txt"
    return match.group(1)


def github_repository(url: str) -> tuple[str, str]:
    """``(owner, name)`` of a GitHub URL (``https://github.com/OWNER/NAME[.git|#...]``)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "github.com", url
    owner, name = parts.path.strip("/").split("/")[:2]
    return owner, name.removesuffix(".git")


# ------------------------------------------------------------------------------------------------ the catalog entry


def test_the_catalog_entry_follows_the_schema_it_names():
    entry = catalog_entry()
    assert entry["$schema"] == CATALOG_SCHEMA
    jsonschema.validate(entry, CATALOG_RULES)
    assert b"\r" not in CATALOG_ENTRY.read_bytes(), "the Index accepts LF line endings only"


def test_the_catalog_entry_passes_the_index_name_url_and_licence_rules():
    entry = catalog_entry()
    assert not EXTENSION_NAME.lower().startswith("slicer")
    owner, repository = github_repository(entry["scm_url"])
    assert repository.startswith("Slicer") and repository == f"Slicer{EXTENSION_NAME}"
    assert entry["category"] == cmake_variable("EXTENSION_CATEGORY") == "Registration"
    assert entry["build_dependencies"] == cmake_variable("EXTENSION_DEPENDS").split() == ["PyTorch"]
    assert github_repository(cmake_variable("EXTENSION_HOMEPAGE")) == (owner, repository)
    assert "Apache License" in (REPOSITORY_ROOT / "LICENSE").read_text(encoding="utf-8")


def test_the_repository_is_under_the_index_size_limit():
    """The Index clones the repository (all its history when the entry names a revision): under 100 MB."""
    if not (REPOSITORY_ROOT / ".git").exists():
        pytest.skip("not a git checkout: the committed files and history cannot be told apart")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY_ROOT, capture_output=True, check=True).stdout
    files = [REPOSITORY_ROOT / name for name in listed.decode().split("\0") if name]
    history = sum(path.stat().st_size for path in (REPOSITORY_ROOT / ".git").rglob("*") if path.is_file())
    total = sum(path.stat().st_size for path in files if path.is_file()) + history
    assert total < 100 * 1024 * 1024


# ------------------------------------------------------------------------------------------------ CMakeLists.txt


def test_cmake_extension_variables_match_the_index_patterns():
    assert index_match("project") == EXTENSION_NAME
    assert index_match("EXTENSION_ICONURL") == cmake_variable("EXTENSION_ICONURL")
    assert index_match("EXTENSION_SCREENSHOTURLS") == cmake_variable("EXTENSION_SCREENSHOTURLS")


def committed_image(url: str) -> Path:
    """The file of this repository that an image URL names (``raw.githubusercontent.com`` at the entry's revision)."""
    entry = catalog_entry()
    owner, repository = github_repository(entry["scm_url"])
    prefix = f"https://raw.githubusercontent.com/{owner}/{repository}/{entry['scm_revision']}/"
    assert url.startswith(prefix) and url.lower().endswith(IMAGE_SUFFIXES), url
    return REPOSITORY_ROOT / url[len(prefix) :]


def test_icon_and_screenshot_urls_name_images_committed_here():
    icon = committed_image(cmake_variable("EXTENSION_ICONURL"))
    assert icon == REPOSITORY_ROOT / "Resources" / "Icons" / "RegSeg.png"
    with Image.open(icon) as image:
        assert (image.format, image.size) == ("PNG", (128, 128))
    screenshots = cmake_variable("EXTENSION_SCREENSHOTURLS").split()
    assert screenshots
    for url in screenshots:
        with Image.open(committed_image(url)) as image:
            assert image.format == "PNG" and min(image.size) >= 400, url


# ------------------------------------------------------------------------------------------------ supported Slicer


@pytest.mark.parametrize(
    "version, python, accepted",
    [("5.8", "3.9", False), ("5.10", "3.12", True), ("5.12", "3.12", True), ("5.10", "3.9", False)],
)
def test_cmake_accepts_slicer_5_10_and_later(tmp_path, version, python, accepted):
    completed = extension_build.configure(tmp_path, version, python)
    assert (completed.returncode == 0) == accepted, completed.stderr
    if not accepted:
        assert MINIMUM_SLICER in completed.stderr


def test_the_supported_slicer_versions_are_stated_alike():
    assert f"Needs Slicer {MINIMUM_SLICER} or later." in cmake_variable("EXTENSION_DESCRIPTION")
    readme = (REPOSITORY_ROOT / "README.md").read_text(encoding="utf-8")
    slicer_section = readme[readme.index("## Using RegSeg in Slicer") :]
    assert f"Slicer {MINIMUM_SLICER} and later" in slicer_section
    assert not re.search(r"Slicer 5\.[0-8](?!\d)(?! and earlier)", slicer_section), "a claim for an unsupported Slicer"


def test_cmake_installs_regseglib_with_its_data_files(tmp_path):
    """RegSegLib is installed beside the modules, every file (e.g. a model manifest), not only its Python files."""
    modules = extension_build.install_extension(tmp_path)
    source = REPOSITORY_ROOT / "RegSegLib"

    def files(root: Path) -> set[Path]:
        return {
            path.relative_to(root)
            for path in root.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
        }

    assert files(modules / "RegSegLib") == files(source)
    assert (modules / "Scripts" / "slicer_register.py").is_file()
    assert (modules / "RegSegRegistration.py").is_file()
    assert (modules / "RegSegSegmentation.py").is_file() and (modules / "Resources" / "UI" / "RegSegSegmentation.ui").is_file()
    assert (modules / "RegSegSlicerLib" / "segmentation.py").is_file()
