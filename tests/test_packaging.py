"""The package as PyPI would get it: an sdist and a wheel built from the checkout, checked by
twine, and the wheel installed into a clean virtualenv where Django finds and serves the admin's
templates and static files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import HERE

# Under scripts/test the suite imports slowwatch from an installed wheel, so the sources are
# found from this file, not from ``slowwatch.__file__``.
ROOT = HERE.parent

# A build on a loaded machine (two venvs, two isolated build environments) may need more than
# the suite's default timeout.
pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

# Copied from the checkout into the build tree: everything but version control, virtualenvs,
# caches and earlier builds, so that MANIFEST.in, not the copy, keeps demo/, docs/, tests/ and
# the rest out of the sdist. A stale slowwatch.egg-info must not come along: setuptools reads
# its SOURCES.txt back into the next sdist.
NOT_SOURCES = shutil.ignore_patterns(
    ".*", "*.egg-info", "_build", "build", "dist", "__pycache__", "*.py[cod]", "*.sqlite3"
)

# What the top of the sdist may hold; setuptools writes PKG-INFO, setup.cfg and the egg-info.
SDIST_TOP = {
    "CHANGELOG.md",
    "LICENSE",
    "MANIFEST.in",
    "PKG-INFO",
    "README.md",
    "pyproject.toml",
    "setup.cfg",
    "setup.py",
    "slowwatch",
    "slowwatch.egg-info",
}

# Run in the clean virtualenv, isolated (-I) so that neither the checkout nor PYTHONPATH can
# stand in for the installed package. argv[1] is a JSON list of static paths and template names.
CHECK_INSTALLED = """
import json
import sys
from importlib.metadata import version

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="packaging-test",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF="__main__",
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "slowwatch",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    STATIC_URL="/static/",
)
django.setup()

from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.template.loader import get_template
from django.test import Client
from django.urls import path

import slowwatch

urlpatterns = [path("admin/", admin.site.urls)]

static, templates = json.loads(sys.argv[1])
call_command("migrate", verbosity=0)
client = Client()
client.force_login(User.objects.create_superuser("admin", "admin@example.com", None))
pages = {}
for url in ("/admin/slowwatch/slowrequest/", "/admin/slowwatch/slowrequest/summary/"):
    response = client.get(url)
    pages[url] = [response.status_code, "slowwatch/admin.css" in response.content.decode()]
print(json.dumps({
    "package": slowwatch.__file__,
    "versions": [slowwatch.__version__, version("slowwatch")],
    "static": {name: finders.find(name) for name in static},
    "templates": {name: get_template(name).origin.name for name in templates},
    "pages": pages,
}))
"""


@dataclass(frozen=True)
class Built:
    sources: Path
    sdist: Path
    wheel: Path
    version: str


def subprocess_env() -> dict[str, str]:
    # The test run's own settings and interpreter options must not leak into pip, build or
    # the clean virtualenv.
    dropped = {
        "DJANGO_SETTINGS_MODULE",
        "PYTHONDEVMODE",
        "PYTHONPATH",
        "PYTHONWARNINGS",
        "VIRTUAL_ENV",
    }
    return {k: v for k, v in os.environ.items() if k not in dropped}


def attempt(cmd: Sequence[str | Path], *, cwd: Path, timeout: float) -> tuple[bool, str]:
    """Runs ``cmd``: whether it succeeded, and its output (with stderr when it failed)."""
    result = subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode == 0:
        return True, result.stdout
    command = " ".join(str(part) for part in cmd)
    return False, f"{command} exited with {result.returncode}:\n{result.stdout}{result.stderr}"


def run(cmd: Sequence[str | Path], *, cwd: Path, timeout: float) -> str:
    ok, output = attempt(cmd, cwd=cwd, timeout=timeout)
    assert ok, output
    return output


def make_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path], cwd=path.parent, timeout=120)
    return path / "bin" / "python"


def pip_install(python: Path, *requirements: str | Path) -> tuple[bool, str]:
    return attempt(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        cwd=python.parent,
        timeout=180,
    )


def source_version(sources: Path) -> str:
    found = re.search(
        r'^__version__ = "([^"]+)"$', (sources / "slowwatch" / "__init__.py").read_text(), re.M
    )
    assert found, "slowwatch/__init__.py sets no __version__"
    return found.group(1)


def package_files(sources: Path) -> set[str]:
    """Every file of the package in the sources, as a path inside an archive."""
    return {
        path.relative_to(sources).as_posix()
        for path in (sources / "slowwatch").rglob("*")
        if path.is_file()
    }


def under(names: list[str], prefix: str) -> list[str]:
    """The archive's names below ``prefix``, relative to it: what Django's finders look up."""
    return [name.removeprefix(prefix) for name in names if name.startswith(prefix)]


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with build and twine, from the package index."""
    python = make_venv(tmp_path_factory.mktemp("tools") / "venv")
    ok, output = pip_install(python, "build", "twine")
    if not ok:
        # Unpinned, these two only fail to install when the index cannot be reached.
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the packaging tests: {output}", pytrace=False)
        pytest.skip(f"build and twine cannot be installed (is PyPI reachable?): {output}")
    return python


@pytest.fixture(scope="module")
def built(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sdist and the wheel of the checkout, built as the release workflow builds them."""
    assert (ROOT / "pyproject.toml").is_file(), f"no checkout at {ROOT}"
    work = tmp_path_factory.mktemp("build")
    # A copy, so that the build writes no egg-info or build/ into the checkout.
    sources = work / "sources"
    shutil.copytree(ROOT, sources, ignore=NOT_SOURCES)
    dist = work / "dist"
    run([tools, "-m", "build", "--outdir", dist, sources], cwd=work, timeout=240)
    (sdist,) = dist.glob("slowwatch-*.tar.gz")
    (wheel,) = dist.glob("slowwatch-*-py3-none-any.whl")
    return Built(sources=sources, sdist=sdist, wheel=wheel, version=source_version(sources))


def test_twine_check_strict_passes(tools: Path, built: Built) -> None:
    output = run(
        [tools, "-m", "twine", "check", "--strict", built.sdist, built.wheel],
        cwd=built.sdist.parent,
        timeout=60,
    )
    assert output.count("PASSED") == 2, output


def test_the_wheel_holds_the_package_and_its_data(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"slowwatch-{built.version}.dist-info/METADATA").decode()
    assert f"\nVersion: {built.version}\n" in metadata, "pyproject.toml and __init__.py disagree"
    assert {name.split("/")[0] for name in names} == {
        "slowwatch",
        f"slowwatch-{built.version}.dist-info",
    }
    assert "slowwatch/py.typed" in names
    assert {"slowwatch/migrations/__init__.py", "slowwatch/migrations/0001_initial.py"} <= names
    assert "slowwatch/static/slowwatch/admin.css" in names
    assert "slowwatch/templates/admin/slowwatch/slowrequest/change_list.html" in names
    assert "slowwatch/templates/slowwatch/email.html" in names
    # Not a hand-kept list: a new template or static file the package-data globs in
    # pyproject.toml miss shows here.
    missing = package_files(built.sources) - names
    assert not missing, f"in the sources but not in the wheel: {sorted(missing)}"


def test_the_sdist_holds_the_sources_and_nothing_else(built: Built) -> None:
    prefix = f"slowwatch-{built.version}/"
    with tarfile.open(built.sdist) as sdist:
        names = {name.removeprefix(prefix) for name in sdist.getnames() if name.startswith(prefix)}
    top = {name.split("/")[0] for name in names}
    assert {"CHANGELOG.md", "LICENSE", "PKG-INFO", "README.md", "pyproject.toml"} <= top
    assert top <= SDIST_TOP, f"unexpected in the sdist: {sorted(top - SDIST_TOP)}"
    missing = package_files(built.sources) - names
    assert not missing, f"in the sources but not in the sdist: {sorted(missing)}"


def test_the_installed_wheel_serves_the_admin(built: Built, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = make_venv(venv)
    ok, output = pip_install(python, built.wheel, "Django>=5.2")
    assert ok, output
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
    static = under(names, "slowwatch/static/")
    templates = under(names, "slowwatch/templates/")
    assert static and templates, "the wheel has no static files or no templates"
    output = run(
        [python, "-I", "-W", "error", "-c", CHECK_INSTALLED, json.dumps([static, templates])],
        cwd=tmp_path,
        timeout=120,
    )
    found: dict[str, Any] = json.loads(output)
    installed = Path(found["package"]).resolve().parent
    assert installed.is_relative_to(venv.resolve()), f"slowwatch imported from {installed}"
    assert found["versions"] == [built.version, built.version]
    for name, path in found["static"].items():
        assert path and Path(path).resolve().is_relative_to(installed), (name, path)
    for name, path in found["templates"].items():
        assert Path(path).resolve().is_relative_to(installed), (name, path)
    assert found["pages"] == {
        "/admin/slowwatch/slowrequest/": [200, True],
        "/admin/slowwatch/slowrequest/summary/": [200, True],
    }
