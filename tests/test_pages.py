"""slowwatch's pages without Django's admin (``include("slowwatch.urls")``), as a
project that never installed ``django.contrib.admin`` and whose users are not staff
mounts them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = textwrap.dedent(
    """
    import re
    import time

    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import include, path


    def slow(request):
        time.sleep(0.6)
        return HttpResponse("ok")


    settings.configure(
        SECRET_KEY="x",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django.contrib.staticfiles",
            "slowwatch",
        ],
        MIDDLEWARE=[
            "slowwatch.middleware.SlowWatchMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}},
        STATIC_URL="/static/",
        LOGIN_URL="/login/",
        SLOWWATCH={"THRESHOLD": 0.3, "IGNORE": ["^/ops/"]},
    )
    django.setup()
    urlpatterns = [path("slow/", slow), path("ops/slowwatch/", include("slowwatch.urls"))]

    from django.apps import apps
    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.test import Client

    from slowwatch import runtime
    from slowwatch.models import Control, SlowRequest

    assert not apps.is_installed("django.contrib.admin")
    call_command("migrate", verbosity=0)
    assert Client().get("/slow/").status_code == 200
    assert runtime.flush(10)
    [row] = SlowRequest.objects.all()
    assert row.state == "finished", row.state

    base = "/ops/slowwatch/"
    pages = [base, f"{base}{row.pk}/", f"{base}endpoints/", f"{base}settings/"]

    # Signed out: the login page. Signed in without the permission: 403.
    assert Client().get(base)["Location"] == "/login/?next=/ops/slowwatch/"
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody"))
    assert all(nobody.get(url).status_code == 403 for url in pages)

    # A user who is not staff, with the view permission: every page.
    ops = Client()
    user = User.objects.create_user("ops")
    user.user_permissions.add(Permission.objects.get(codename="view_slowrequest"))
    ops.force_login(user)
    listed = ops.get(base).content.decode()
    assert f'href="/ops/slowwatch/{row.pk}/">/slow/</a>' in listed, listed
    page = ops.get(f"{base}{row.pk}/").content.decode()
    assert 'class="sw-flame"' in page and "time.sleep(0.6)" in page
    assert "frames of django</summary>" in page
    assert f'href="/ops/slowwatch/{row.pk}/speedscope/"' in page
    assert 'href="/ops/slowwatch/?route=slow%2F&amp;method=GET"' in page
    download = ops.get(f"{base}{row.pk}/speedscope/")
    assert download["Content-Type"] == "application/json" and b'"sampled"' in download.content
    assert b"slow (" in ops.get(f"{base}{row.pk}/collapsed/").content
    summary = ops.get(f"{base}endpoints/").content.decode()
    assert "<code>slow/</code>" in summary and '<svg class="sw-chart"' in summary
    settings_page = ops.get(f"{base}settings/").content.decode()
    assert "Only a superuser can change this." in settings_page
    assert "DatabaseReporter queue delivered" in settings_page
    assert ops.post(f"{base}settings/", {"paused": "on"}).status_code == 403
    assert ops.get(f"{base}?route=nothing/").content.decode().count("/slow/") == 0
    assert ops.get(f"{base}999/").status_code == 404

    # A superuser pauses every worker from the settings page.
    root = Client()
    root.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    saved = root.post(f"{base}settings/", {"paused": "on"})
    assert saved.status_code == 302 and saved["Location"] == f"{base}settings/?saved=1"
    assert Control.objects.get().paused
    assert "Saved. Every worker" in root.get(saved["Location"]).content.decode()
    print("every page checked")
    """
)


def test_the_pages_serve_a_project_without_the_admin(tmp_path: Path) -> None:
    script = tmp_path / "project.py"
    script.write_text(PROJECT)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "every page checked" in run.stdout
