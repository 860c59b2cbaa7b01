"""Every distribution of the workspace is publishable as it stands: license, metadata, floors.

The distributions are read from the root ``pyproject.toml`` workspace, so a new one is checked
without editing this file. The metadata checks read each ``pyproject.toml``; the last test
builds the wheels and sdists (``uv build``) and reads what an index would receive.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from eventforge.testing.venvs import find_uv
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = "eventforge-core"
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
SOURCE = "https://github.com/eventforge/eventforge"
URL_LABELS = {"Homepage", "Documentation", "Source", "Changelog", "Issues"}
# Distribution names whose import name is not the normalized distribution name.
IMPORT_NAMES = {"eventforge-core": "eventforge", "nats-py": "nats"}


def _toml(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def members() -> dict[str, Path]:
    """Each workspace member's distribution name and directory."""
    paths = _toml(ROOT / "pyproject.toml")["tool"]["uv"]["workspace"]["members"]
    return {_toml(ROOT / p / "pyproject.toml")["project"]["name"]: ROOT / p for p in paths}


MEMBERS = members()


def project(dist: str) -> dict[str, Any]:
    return _toml(MEMBERS[dist] / "pyproject.toml")


def package_dir(dist: str) -> Path:
    """The import package of ``dist`` (the one hatch builds)."""
    (path,) = project(dist)["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return MEMBERS[dist] / path


def declared_version(dist: str) -> str:
    """``__version__`` of the file hatch reads the version from."""
    path = MEMBERS[dist] / project(dist)["tool"]["hatch"]["version"]["path"]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            return str(ast.literal_eval(node.value))
    raise AssertionError(f"no __version__ in {path}")


def release_line(version: str) -> str:
    """The specifier pinning a 0.x (or x.y) release line: ``>=0.1,<0.2``."""
    major, minor = (int(part) for part in version.split(".")[:2])
    if major == 0:
        return f">=0.{minor},<0.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


@pytest.mark.parametrize("dist", MEMBERS)
def test_distribution_ships_the_mit_license_file(dist: str) -> None:
    meta = project(dist)["project"]
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]
    assert (MEMBERS[dist] / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


@pytest.mark.parametrize("dist", MEMBERS)
def test_distribution_declares_classifiers_and_project_urls(dist: str) -> None:
    meta = project(dist)["project"]
    classifiers = set(meta["classifiers"])
    floor = meta["requires-python"].removeprefix(">=")
    # A distribution that installs on an older Python but works only from a newer one (its
    # client needs it) names that one in its CI table and classifies only what works.
    floor = project(dist).get("tool", {}).get("eventforge", {}).get("ci", {}).get("python", floor)
    pythons = SUPPORTED_PYTHONS[SUPPORTED_PYTHONS.index(floor) :]
    declared = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    assert declared == set(pythons)
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert "Typing :: Typed" in classifiers
    assert (package_dir(dist) / "py.typed").exists()
    if "Framework :: Pytest" in classifiers:
        assert project(dist)["project"]["entry-points"]["pytest11"]
    assert set(meta["urls"]) == URL_LABELS
    assert all(url.startswith(SOURCE) for url in meta["urls"].values())


@pytest.mark.parametrize("dist", MEMBERS)
def test_version_has_one_source(dist: str) -> None:
    meta = project(dist)["project"]
    assert "version" not in meta
    assert "version" in meta["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", declared_version(dist))


@pytest.mark.parametrize("dist", MEMBERS)
def test_siblings_are_pinned_to_the_core_release_line(dist: str) -> None:
    line = release_line(declared_version(CORE))
    meta = project(dist)["project"]
    requirements = [Requirement(r) for r in meta["dependencies"]]
    for extra in meta.get("optional-dependencies", {}).values():
        requirements += [Requirement(r) for r in extra]
    siblings = [r for r in requirements if r.name in MEMBERS]
    if dist != CORE:
        assert CORE in {r.name for r in siblings}, f"{dist} must depend on {CORE}"
    for requirement in siblings:
        assert str(requirement.specifier) == str(Requirement(f"x{line}").specifier), requirement


@pytest.mark.parametrize("dist", MEMBERS)
def test_every_runtime_dependency_is_imported(dist: str) -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in package_dir(dist).rglob("*.py"))
    for text in project(dist)["project"]["dependencies"]:
        name = Requirement(text).name
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), f"{name} unused"


@pytest.mark.parametrize("dist", MEMBERS)
def test_readme_stands_alone_on_a_package_index(dist: str) -> None:
    text = (MEMBERS[dist] / "README.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {dist}\n")
    assert len(text.splitlines()) >= 10, "a one-line README leaves the index page empty"
    relative = re.findall(r"\]\((?!https?://|#)([^)]+)\)", text)
    assert not relative, f"links that do not resolve on an index page: {relative}"
    assert SOURCE in text


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is needed to build the distributions")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [*uv, "build", "--all-packages", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dist", MEMBERS)
def test_built_wheel_and_sdist_carry_license_and_metadata(built: Path, dist: str) -> None:
    stem = f"{dist.replace('-', '_')}-{declared_version(dist)}"
    with zipfile.ZipFile(built / f"{stem}-py3-none-any.whl") as wheel:
        metadata = Parser().parsestr(wheel.read(f"{stem}.dist-info/METADATA").decode())
        license_text = wheel.read(f"{stem}.dist-info/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert license_text == (ROOT / "LICENSE").read_text()
    assert metadata["Version"] == declared_version(dist)
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} == URL_LABELS
    assert "importlib-metadata" not in " ".join(metadata.get_all("Requires-Dist") or [])
    assert metadata.get_payload().startswith(f"# {dist}\n")
    with tarfile.open(built / f"{stem}.tar.gz") as sdist:
        names = set(sdist.getnames())
    assert {f"{stem}/LICENSE", f"{stem}/README.md", f"{stem}/pyproject.toml"} <= names
