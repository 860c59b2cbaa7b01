"""Install the built wheels as users would, at their declared floors, and run tests against them.

Usage: ``python scripts/floors.py [--keep DIR]`` (``scripts/floors.sh`` runs it in CI).

1. ``uv build`` every workspace member's wheel (the members are read from the root
   ``pyproject.toml``, so a new distribution is covered without editing this script).
2. Floors: for each member, a fresh venv on the OLDEST supported Python (or the member's own
   oldest, ``python`` below) gets the member's wheel
   (and the sibling wheels it needs) with ``uv pip install --resolution lowest-direct``; every
   requirement the member and eventforge-core declare (plus the chosen extras and the test
   tools) is passed as a direct requirement, so each one is installed at its floor. Then the
   member's selected tests run from the source tree against the installed wheels.
3. Newest Python: the same for eventforge-core (and the TLS-carrying eventforge-tcp) on the
   NEWEST supported Python with the highest versions.

What each member contributes is set in its ``pyproject.toml``::

    [tool.eventforge.ci]
    extras = ["otel"]                        # extras installed (and floored) with it
    tests = ["tests/test_otel.py"]           # pytest arguments, relative to the member
    newest = true                            # also run on the newest Python
    python = "3.11"                          # its oldest Python, when newer than the project's

A member without that table runs ``tests -m "not slow"``. Interpreters are never downloaded:
they are looked up with ``uv python find``, on ``PATH`` and in pyenv; a missing one fails the
run when ``EVENTFORGE_REQUIRE_PYTHONS=1`` (CI) and is skipped otherwise.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OLDEST, NEWEST = "3.10", "3.13"
TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis")
"""Test tools installed with every member, at the floors of the root ``dev`` group."""

ENV = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
ENV["UV_PYTHON_DOWNLOADS"] = "never"
ENV["EVENTFORGE_STRICT_PLUGINS"] = "1"


def toml(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def name_of(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@dataclass
class Member:
    name: str
    path: Path
    dependencies: list[str]
    extras: dict[str, list[str]]
    chosen_extras: list[str]
    tests: list[str]
    newest: bool
    oldest: str

    @property
    def wheel_stem(self) -> str:
        return self.name.replace("-", "_")


@dataclass
class Job:
    member: Member
    python: str
    lowest: bool
    output: list[str] = field(default_factory=list)
    ok: bool = False
    seconds: float = 0.0


def members() -> dict[str, Member]:
    root = toml(ROOT / "pyproject.toml")
    found: dict[str, Member] = {}
    for rel in root["tool"]["uv"]["workspace"]["members"]:
        data = toml(ROOT / rel / "pyproject.toml")
        project = data["project"]
        ci = data.get("tool", {}).get("eventforge", {}).get("ci", {})
        member = Member(
            name=project["name"],
            path=ROOT / rel,
            dependencies=list(project.get("dependencies", [])),
            extras=dict(project.get("optional-dependencies", {})),
            chosen_extras=list(ci.get("extras", [])),
            tests=list(ci.get("tests", ["tests", "-m", "not slow"])),
            newest=bool(ci.get("newest", False)),
            oldest=str(ci.get("python", OLDEST)),
        )
        found[member.name] = member
    return found


def dev_floors() -> dict[str, str]:
    """The root ``dev`` group's requirements, by name (the test tools' floors)."""
    group = toml(ROOT / "pyproject.toml")["dependency-groups"]["dev"]
    return {name_of(r): r for r in group}


def find_python(version: str) -> str | None:
    """An installed interpreter for ``version``; never downloads one."""
    candidates: list[str] = []
    done = subprocess.run(
        ["uv", "python", "find", "--no-project", version], capture_output=True, text=True, env=ENV
    )
    if done.returncode == 0:
        candidates.append(done.stdout.strip())
    if found := shutil.which(f"python{version}"):
        candidates.append(found)
    candidates += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3"))
    )
    for candidate in candidates:
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def run(job: Job, args: list[str], cwd: Path = ROOT) -> bool:
    job.output.append("$ " + " ".join(args))
    done = subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=cwd)
    job.output.append((done.stdout + done.stderr).rstrip())
    return done.returncode == 0


def requirements(job: Job, everyone: dict[str, Member], dist: Path) -> list[str]:
    """The wheels and the direct requirements (each at its floor under lowest-direct)."""
    wanted = [job.member.name]
    direct: list[str] = []
    queue = [job.member]
    while queue:
        member = queue.pop()
        reqs = list(member.dependencies)
        for extra in member.chosen_extras if member is job.member else []:
            reqs += member.extras[extra]
        for req in reqs:
            name = name_of(req)
            if name in everyone:
                if name not in wanted:
                    wanted.append(name)
                    queue.append(everyone[name])
            else:
                direct.append(req)
    floors = dev_floors()
    direct += [floors.get(tool, tool) for tool in TEST_TOOLS]
    wheels = [str(next(dist.glob(f"{everyone[n].wheel_stem}-*.whl"))) for n in wanted]
    return wheels + direct


def run_job(job: Job, everyone: dict[str, Member], dist: Path, base: Path) -> Job:
    started = time.monotonic()
    kind = "floors" if job.lowest else "newest"
    venv = base / f"{kind}-{job.member.name}"
    python = str(venv / "bin" / "python")
    install = ["uv", "pip", "install", "--python", python, "--find-links", str(dist)]
    if job.lowest:
        install += ["--resolution", "lowest-direct"]
    package = job.member.path.joinpath("src").glob("*/__init__.py")
    module = next(package).parent.name
    job.ok = (
        run(job, ["uv", "venv", "--quiet", "--python", job.python, str(venv)])
        and run(job, [*install, *requirements(job, everyone, dist)])
        and run(job, ["uv", "pip", "freeze", "--python", python])
        # the tests must import the installed wheel, not the source tree
        and run(
            job,
            [python, "-c", f"import {module}; assert 'site-packages' in {module}.__file__"],
        )
        and run(
            job,
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *job.member.tests],
            cwd=job.member.path,
        )
    )
    job.seconds = time.monotonic() - started
    return job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", type=Path, help="build and install under DIR and keep it")
    parser.add_argument("--only", action="append", help="only this distribution (repeatable)")
    args = parser.parse_args()
    require = os.environ.get("EVENTFORGE_REQUIRE_PYTHONS", "") in ("1", "true", "yes")
    base = args.keep or Path(tempfile.mkdtemp(prefix="eventforge-floors-"))
    everyone = members()
    selected = [m for m in everyone.values() if not args.only or m.name in args.only]

    versions = sorted(
        {OLDEST, NEWEST, *(m.oldest for m in selected)},
        key=lambda v: [int(p) for p in v.split(".")],
    )
    pythons = {v: find_python(v) for v in versions}
    for version, found in pythons.items():
        if found is None:
            print(f"floors: no Python {version} installed", file=sys.stderr)
            if require:
                print("floors: EVENTFORGE_REQUIRE_PYTHONS=1; failing", file=sys.stderr)
                return 1
    dist = base / "dist"
    build = subprocess.run(
        ["uv", "build", "--all-packages", "--wheel", "--out-dir", str(dist)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    if build.returncode != 0:
        print(build.stdout + build.stderr, file=sys.stderr)
        return 1

    jobs: list[Job] = []
    jobs += [Job(m, found, lowest=True) for m in selected if (found := pythons[m.oldest])]
    if pythons[NEWEST]:
        jobs += [Job(m, pythons[NEWEST], lowest=False) for m in selected if m.newest]
    with ThreadPoolExecutor(max_workers=2) as pool:
        finished = list(pool.map(lambda j: run_job(j, everyone, dist, base), jobs))
    failed = 0
    for job in finished:
        kind = f"floors on {job.member.oldest}" if job.lowest else f"newest on {NEWEST}"
        status = "ok" if job.ok else "FAILED"
        print(f"floors: {job.member.name} ({kind}): {status} in {job.seconds:.0f} s")
        if not job.ok:
            failed += 1
            print("\n".join(job.output), file=sys.stderr)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
