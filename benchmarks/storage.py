"""What slowwatch's storage costs: the admin's pages over {rows:,} rows, and each write.

Run it through ``scripts/bench storage`` (which builds the virtualenv, with
psycopg for PostgreSQL), or directly in one that has slowwatch and psycopg::

    python benchmarks/storage.py            # SQLite and PostgreSQL, 5 runs each
    python benchmarks/storage.py --quick    # 3 runs each, fewer writes (still 100,000 rows)
    python benchmarks/storage.py --only writes   # the writes alone (still seeded first)

Each database is measured in a child process of this script (``--child
sqlite|postgresql``): a temporary SQLite file, and a scratch PostgreSQL
database (``slowwatch_bench`` on 127.0.0.1:5432, user postgres, created through
the ``postgres`` database and dropped afterwards; skipped when unreachable).
The child migrates, seeds 100,000 realistic rows with ``bulk_create`` (not
timed), then times, after one warm-up each, the median of several runs of:

* ``slowwatch.admin.summary.endpoints()`` for the 24 h and the 30 d window;
* the admin pages through ``django.test.Client`` as a logged-in superuser: the
  endpoint summary (30 d), the change list, the change list of the busiest
  endpoint (the summary's link) and the detail page of a finished request;
* ``DatabaseReporter().handle()`` of a ``slow`` then a ``finished`` report for
  distinct request ids, on the same (seeded) table, each followed by
  ``idle()`` as on the reporter thread when its queue runs empty (so each
  transition opens a connection); then the same ``save()`` calls in a burst on
  one connection.

The output is a Markdown table with the targets, then the plans of the
summary's queries (``EXPLAIN QUERY PLAN`` / ``EXPLAIN (ANALYZE, BUFFERS)``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROWS = int(os.environ.get("SLOWWATCH_BENCH_ROWS", 100_000))
BATCH = 1_000
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PG_NAME = "slowwatch_bench"
SUMMARY_TARGET_MS = 500.0
WRITE_TARGET_MS = 5.0


def out(line: str = "") -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# =============================================================================
# Child: one database, in a process of its own
# =============================================================================


def configure(db: str, path: str) -> None:
    import django
    from django.conf import settings
    from django.urls import path as url

    if db == "sqlite":
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    else:
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": PG_NAME,
            "HOST": PG["host"],
            "PORT": PG["port"],
            "USER": PG["user"],
        }
    urls = types.ModuleType("storage_bench_urls")
    sys.modules["storage_bench_urls"] = urls
    settings.configure(
        SECRET_KEY="benchmark",
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        ROOT_URLCONF="storage_bench_urls",
        STATIC_URL="/static/",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "slowwatch",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
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
        DATABASES={"default": database},
        LOGGING_CONFIG=None,
        SLOWWATCH={
            "REPORTERS": ["slowwatch.reporters.DatabaseReporter"],
            "RUNTIME_CONTROL": False,
            # The default (30 days, 50,000 rows) would prune the seeded table
            # on the first write; 100,000 rows needs MAX_ROWS raised anyway.
            "RETENTION": {"MAX_AGE_DAYS": None, "MAX_ROWS": None},
        },
    )
    django.setup()
    from django.contrib import admin

    urls.urlpatterns = [url("admin/", admin.site.urls)]  # type: ignore[attr-defined]


# -- realistic content ---------------------------------------------------------

SITE = "/srv/shop/.venv/lib/python3.12/site-packages"
#: This interpreter's standard library, so that the reporter sees those frames
#: as a real stack's (no source context looked up for them).
STDLIB = sysconfig.get_paths()["stdlib"]
#: Replaced by a temporary directory of source files in the child.
APP = "/srv/shop/src"

#: (filename, function, module, line): a request through gunicorn and Django.
OUTER = [
    (
        f"{SITE}/gunicorn/workers/sync.py",
        "run",
        "gunicorn.workers.sync",
        "self.run_for_one(timeout)",
    ),
    (
        f"{SITE}/gunicorn/workers/sync.py",
        "run_for_one",
        "gunicorn.workers.sync",
        "self.accept(listener)",
    ),
    (
        f"{SITE}/gunicorn/workers/sync.py",
        "accept",
        "gunicorn.workers.sync",
        "self.handle(listener, client, addr)",
    ),
    (
        f"{SITE}/gunicorn/workers/sync.py",
        "handle",
        "gunicorn.workers.sync",
        "self.handle_request(listener, req, client, addr)",
    ),
    (
        f"{SITE}/gunicorn/workers/sync.py",
        "handle_request",
        "gunicorn.workers.sync",
        "respiter = self.wsgi(environ, resp.start_response)",
    ),
    (
        f"{SITE}/django/core/handlers/wsgi.py",
        "__call__",
        "django.core.handlers.wsgi",
        "response = self.get_response(request)",
    ),
    (
        f"{SITE}/django/core/handlers/base.py",
        "get_response",
        "django.core.handlers.base",
        "response = self._middleware_chain(request)",
    ),
    (
        f"{SITE}/django/core/handlers/exception.py",
        "inner",
        "django.core.handlers.exception",
        "response = get_response(request)",
    ),
    (
        f"{SITE}/django/utils/deprecation.py",
        "__call__",
        "django.utils.deprecation",
        "response = response or self.get_response(request)",
    ),
    (
        f"{SITE}/django/core/handlers/exception.py",
        "inner",
        "django.core.handlers.exception",
        "response = get_response(request)",
    ),
    (
        f"{SITE}/django/utils/deprecation.py",
        "__call__",
        "django.utils.deprecation",
        "response = response or self.get_response(request)",
    ),
    (
        f"{SITE}/django/core/handlers/exception.py",
        "inner",
        "django.core.handlers.exception",
        "response = get_response(request)",
    ),
    (
        f"{SITE}/django/core/handlers/base.py",
        "_get_response",
        "django.core.handlers.base",
        "response = wrapped_callback(request, *callback_args, **callback_kwargs)",
    ),
    (
        f"{SITE}/django/views/generic/base.py",
        "view",
        "django.views.generic.base",
        "return self.dispatch(request, *args, **kwargs)",
    ),
    (
        f"{SITE}/django/views/generic/base.py",
        "dispatch",
        "django.views.generic.base",
        "return handler(request, *args, **kwargs)",
    ),
]
LEAVES = [
    [
        (
            f"{SITE}/django/db/models/query.py",
            "__iter__",
            "django.db.models.query",
            "self._fetch_all()",
        ),
        (
            f"{SITE}/django/db/models/query.py",
            "_fetch_all",
            "django.db.models.query",
            "self._result_cache = list(self._iterable_class(self))",
        ),
        (
            f"{SITE}/django/db/models/query.py",
            "__iter__",
            "django.db.models.query",
            "results = compiler.execute_sql(",
        ),
        (
            f"{SITE}/django/db/models/sql/compiler.py",
            "execute_sql",
            "django.db.models.sql.compiler",
            "cursor.execute(sql, params)",
        ),
        (
            f"{SITE}/django/db/backends/utils.py",
            "execute",
            "django.db.backends.utils",
            "return self._execute_with_wrappers(",
        ),
        (
            f"{SITE}/django/db/backends/utils.py",
            "_execute_with_wrappers",
            "django.db.backends.utils",
            "return executor(sql, params, many, context)",
        ),
        (
            f"{SITE}/django/db/backends/utils.py",
            "_execute",
            "django.db.backends.utils",
            "return self.cursor.execute(sql, params)",
        ),
        (f"{SITE}/psycopg/cursor.py", "execute", "psycopg.cursor", "self._conn.wait("),
        (
            f"{SITE}/psycopg/connection.py",
            "wait",
            "psycopg.connection",
            "return waiting.wait(gen, self.pgconn.socket, interval=interval)",
        ),
    ],
    [
        (
            f"{SITE}/requests/api.py",
            "post",
            "requests.api",
            'return request("post", url, data=data, json=json, **kwargs)',
        ),
        (
            f"{SITE}/requests/sessions.py",
            "request",
            "requests.sessions",
            "resp = self.send(prep, **send_kwargs)",
        ),
        (
            f"{SITE}/requests/sessions.py",
            "send",
            "requests.sessions",
            "r = adapter.send(request, **kwargs)",
        ),
        (f"{SITE}/requests/adapters.py", "send", "requests.adapters", "resp = conn.urlopen("),
        (
            f"{SITE}/urllib3/connectionpool.py",
            "urlopen",
            "urllib3.connectionpool",
            "response = self._make_request(",
        ),
        (
            f"{SITE}/urllib3/connectionpool.py",
            "_make_request",
            "urllib3.connectionpool",
            "response = conn.getresponse()",
        ),
        (f"{STDLIB}/http/client.py", "getresponse", "http.client", "response.begin()"),
        (
            f"{STDLIB}/http/client.py",
            "begin",
            "http.client",
            "version, status, reason = self._read_status()",
        ),
        (f"{STDLIB}/socket.py", "readinto", "socket", "return self._sock.recv_into(b)"),
    ],
    [
        (
            f"{SITE}/django/template/response.py",
            "render",
            "django.template.response",
            "self.content = self.rendered_content",
        ),
        (
            f"{SITE}/django/template/response.py",
            "rendered_content",
            "django.template.response",
            "return template.render(context, self._request)",
        ),
        (
            f"{SITE}/django/template/backends/django.py",
            "render",
            "django.template.backends.django",
            "return self.template.render(context)",
        ),
        (
            f"{SITE}/django/template/base.py",
            "render",
            "django.template.base",
            "return self._render(context)",
        ),
        (
            f"{SITE}/django/template/base.py",
            "_render",
            "django.template.base",
            "return self.nodelist.render(context)",
        ),
        (
            f"{SITE}/django/template/defaulttags.py",
            "render",
            "django.template.defaulttags",
            "nodelist.append(node.render_annotated(context))",
        ),
        (
            f"{SITE}/django/template/base.py",
            "render_annotated",
            "django.template.base",
            "return self.render(context)",
        ),
    ],
]
APPS = [
    "shop",
    "orders",
    "catalog",
    "accounts",
    "billing",
    "search",
    "reports",
    "api",
    "cms",
    "inventory",
]
RESOURCES = [
    "product",
    "order",
    "invoice",
    "customer",
    "cart",
    "payment",
    "shipment",
    "review",
    "coupon",
    "category",
    "export",
    "import",
    "report",
    "webhook",
    "subscription",
]
SUFFIXES = [
    "",
    "<int:pk>/",
    "<int:pk>/edit/",
    "<slug:slug>/",
    "<uuid:id>/items/",
    "search/",
    "export.csv",
]


def routes(rng: random.Random) -> list[tuple[str, str, str]]:
    """About 150 routes × 2-3 methods: (route, method, view)."""
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    while len(seen) < 150:
        app, res, suffix = rng.choice(APPS), rng.choice(RESOURCES), rng.choice(SUFFIXES)
        prefix = "api/v1/" if app == "api" else f"{app}/"
        route = f"{prefix}{res}s/{suffix}"
        if route in seen:
            continue
        seen.add(route)
        view = f"{app}.views.{res.title()}{'Detail' if '<' in suffix else 'List'}View"
        methods = ["GET", "POST"] + rng.sample(
            ["PUT", "PATCH", "DELETE", "HEAD"], rng.randint(0, 1)
        )
        found += [(route, method, view) for method in methods]
    rng.shuffle(found)
    return found


def concrete(route: str, rng: random.Random) -> str:
    path = route.replace("<int:pk>", str(rng.randint(1, 99999))).replace(
        "<slug:slug>", rng.choice(["summer-sale", "blue-shoes", "gift-card", "clearance"])
    )
    path = path.replace("<uuid:id>", f"{rng.getrandbits(128):032x}")
    query = rng.choice(
        ["", "", "?page=2", "?q=shoes&sort=-price", "?format=json&token=[redacted]"]
    )
    return f"/{path}{query}"


def app_frames(app: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    mods = ["views", "services", "selectors", "models", "serializers", "utils"]
    return [
        (
            f"{APP}/{app}/{mod}.py",
            rng.choice(["get", "post", "build_context", "compute_totals", "sync", "render_rows"]),
            f"{app}.{mod}",
            rng.choice(
                [
                    "rows = list(self.get_queryset().filter(active=True))",
                    "total = sum(line.price * line.quantity for line in order.lines.all())",
                    "response = client.post(settings.PAYMENT_URL, json=payload, timeout=30)",
                    "return render(request, self.template_name, context)",
                ]
            ),
        )
        for mod in rng.sample(mods, rng.randint(3, 6))
    ]


def stack_of(app: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    """About 30 frames, outermost first."""
    frames = OUTER + app_frames(app, rng) + rng.choice(LEAVES)
    return frames[:32]


def stack_doc(frames: list[tuple[str, str, str, str]], rng: random.Random) -> dict[str, Any]:
    docs = []
    for filename, function, module, line in frames:
        lineno = rng.randint(20, 900)
        doc: dict[str, Any] = {
            "filename": filename,
            "lineno": lineno,
            "function": function,
            "module": module,
            "line": line,
            "kind": "app"
            if filename.startswith(APP)
            else "django"
            if "/django/" in filename
            else "lib",
        }
        if doc["kind"] == "app":
            doc["context"] = [
                [n, f"        # line {n}: {line}"[:90]] for n in range(lineno - 3, lineno + 4)
            ]
        docs.append(doc)
    return {"frames": docs, "hidden": 0, "truncated": 0}


def profile_stacks(
    app: str, rng: random.Random, n: int = 20
) -> list[tuple[tuple[tuple[str, str, int], ...], int]]:
    stacks = []
    for _ in range(n):
        key = tuple((f, fn, rng.randint(20, 900)) for f, fn, _, _ in stack_of(app, rng))
        stacks.append((key, rng.randint(1, 60)))
    stacks.sort(key=lambda kv: -kv[1])
    return stacks


def sql_doc(rng: random.Random) -> dict[str, Any]:
    def stmt() -> dict[str, Any]:
        table = rng.choice(["shop_product", "orders_order", "orders_orderline", "billing_invoice"])
        sql = (
            f'SELECT "{table}"."id", "{table}"."created", "{table}"."status", "{table}"."total" '
            f'FROM "{table}" INNER JOIN "accounts_customer" ON ("{table}"."customer_id" = '
            f'"accounts_customer"."id") WHERE ("{table}"."status" IN (...) AND '
            f'"accounts_customer"."region" = ?) ORDER BY "{table}"."created" DESC LIMIT ?'
        )
        return {
            "sql": sql,
            "count": rng.randint(1, 400),
            "time": rng.random() * 3,
            "slowest": rng.random(),
        }

    count = rng.randint(5, 800)
    return {
        "count": count,
        "time": rng.random() * 10,
        "slowest": [stmt() for _ in range(5)],
        "repeated": [stmt() for _ in range(rng.randint(0, 3))],
        "statements_dropped": 0,
        "in_flight_seen": [
            {"sql": stmt()["sql"], "alias": "default", "elapsed": rng.random() * 4}
            for _ in range(rng.randint(0, 2))
        ],
    }


def process_doc(rng: random.Random) -> dict[str, Any]:
    return {
        "rss": rng.randint(150, 900) << 20,
        "threads": rng.randint(4, 40),
        "cpu_seconds": round(rng.random() * 5000, 3),
        "cpu_percent": round(rng.random() * 100, 1),
        "ctx_switches": {"voluntary": rng.randint(1, 10**6), "involuntary": rng.randint(1, 10**5)},
        "open_fds": rng.randint(10, 200),
        "load": [round(rng.random() * 4, 2) for _ in range(3)],
    }


def variants(route: str, method: str, view: str, rng: random.Random) -> list[dict[str, Any]]:
    """A few pre-built JSON payloads per endpoint (the database still stores each in full)."""
    from slowwatch.core.profile import FrozenProfile

    app = view.split(".")[0]
    found = []
    for _ in range(3):
        frames = stack_of(app, rng)
        profile = FrozenProfile(
            interval=0.05,
            samples=0,
            stacks=tuple(profile_stacks(app, rng)),
            states=(
                ("db", rng.randint(0, 80)),
                ("cpu", rng.randint(0, 60)),
                ("io", rng.randint(0, 40)),
            ),
            cpu_time=rng.random() * 5,
        )
        found.append(
            {
                "stack": stack_doc(frames, rng),
                "profile": profile.to_dict(),
                "sql": sql_doc(rng),
                "process": process_doc(rng),
            }
        )
    return found


def insert(batch: list[Any], alias: str) -> None:
    """``bulk_create``; on PostgreSQL a ``COPY`` of the same values.

    (Django's psycopg cursors bind parameters client-side: quoting a batch of
    1,000 rows of 60 KB JSON that way takes minutes per 100,000 rows.)
    """
    from django.db import connections

    from slowwatch.models import SlowRequest

    connection = connections[alias]
    if connection.vendor != "postgresql":
        SlowRequest.objects.using(alias).bulk_create(batch)
        return
    import psycopg

    fields = [f for f in SlowRequest._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    connection.ensure_connection()
    with connection.connection.transaction():
        cursor = psycopg.Cursor(connection.connection)
        with cursor.copy(f"COPY {SlowRequest._meta.db_table} ({columns}) FROM STDIN") as copy:
            for row in batch:
                copy.write_row(
                    [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
                )


def seed(rows: int, alias: str = "default") -> tuple[float, list[tuple[str, str, str]]]:
    from slowwatch.models import SlowRequest

    rng = random.Random(2024)
    endpoints = routes(rng)
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(endpoints))]
    payloads = {e: variants(*e, rng) for e in endpoints}
    mu = {e: math.log(rng.uniform(1.5, 8)) for e in endpoints}
    now = datetime.now(timezone.utc)
    span = timedelta(days=30).total_seconds() - 60
    t0 = time.perf_counter()
    batch: list[SlowRequest] = []
    for i in range(rows):
        route, method, view = endpoint = rng.choices(endpoints, weights)[0]
        payload = rng.choice(payloads[endpoint])
        started = now - timedelta(seconds=rng.random() * span)
        threshold = 1.0
        state = rng.choices(["finished", "slow", "killed", "lost"], [93, 3, 3, 1])[0]
        duration = min(60.0, max(threshold, math.exp(rng.gauss(mu[endpoint], 0.8))))
        row = SlowRequest(
            request_id=f"{rng.getrandbits(128):032x}",
            state=state,
            method=method,
            path=concrete(route, rng),
            route=route,
            view=view,
            host="shop.example.com",
            hostname=f"web-{rng.randint(1, 8)}",
            pid=rng.randint(1000, 60000),
            thread=f"MainThread ({rng.getrandbits(47)})",
            user_id=str(rng.randint(1, 50000)) if rng.random() < 0.6 else "",
            started_at=started,
            threshold=threshold,
            duration=duration if state != "slow" else threshold + rng.random() * 2,
            sql_count=payload["sql"]["count"],
            sql_time=payload["sql"]["time"],
            sql=payload["sql"],
            process=payload["process"],
            stack={} if state == "lost" else payload["stack"],
            timeline=[
                {"kind": "slow", "at": started.timestamp() + threshold, "elapsed": threshold}
            ],
        )
        if state != "lost":
            row.detected_at = started + timedelta(seconds=threshold + 0.003)
        if state in ("finished", "killed"):
            row.finished_at = started + timedelta(seconds=duration)
            row.timeline.append(
                {"kind": state, "at": row.finished_at.timestamp(), "elapsed": duration}
            )
        if state == "finished":
            parts = [rng.expovariate(1) for _ in range(3)]
            total = sum(parts)
            cpu, db = parts[0] / total, parts[1] / total
            row.status_code = rng.choices([200, 302, 500, 504], [90, 4, 4, 2])[0]
            row.exception = (
                "OperationalError: canceling statement" if row.status_code == 500 else ""
            )
            row.profile = payload["profile"]
            row.states = payload["profile"]["states"]
            row.cpu_time = duration * cpu
            row.cpu_share, row.db_share, row.wait_share = cpu, db, max(0.0, 1 - cpu - db)
            row.verdict = f"mostly in the database ({db:.0%})" if db > 0.5 else "mixed"
        batch.append(row)
        if len(batch) == BATCH or i == rows - 1:
            insert(batch, alias)
            batch = []
            if (i + 1) % 20_000 == 0:
                note(f"  seeded {i + 1:,} rows ({time.perf_counter() - t0:.0f} s)")
    return time.perf_counter() - t0, endpoints


# -- measuring -----------------------------------------------------------------


class Recorder:
    """An execute_wrapper that keeps every statement, its parameters and its time."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, Any, float]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.queries.append((sql, params, (time.perf_counter() - t0) * 1000))


def timed(fn: Any, reps: int) -> dict[str, Any]:
    """One warm-up, then ``reps`` runs (ms); the statements of one more, recorded."""
    from django.db import connection

    fn()
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    recorder = Recorder()
    with connection.execute_wrapper(recorder):
        fn()
    slowest = sorted(recorder.queries, key=lambda q: -q[2])
    return {
        "runs": runs,
        "median": statistics.median(runs),
        "queries": len(recorder.queries),
        "query_ms": sum(q[2] for q in recorder.queries),
        "slowest": [
            {"sql": sql, "params": repr(params), "ms": ms} for sql, params, ms in slowest[:3]
        ],
        "_recorded": recorder.queries,
    }


def explain(db: str, queries: list[tuple[str, Any, float]]) -> list[dict[str, Any]]:
    from django.db import connection

    plans = []
    for sql, params, ms in queries:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        with connection.cursor() as cursor:
            if db == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
                rows = cursor.fetchall()
                depth: dict[int, int] = {0: 0}
                lines = []
                for node, parent, _, detail in rows:
                    depth[node] = depth.get(parent, 0) + 1
                    lines.append("  " * (depth[node] - 1) + detail)
                plan = "\n".join(lines)
            else:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = "\n".join(r[0] for r in cursor.fetchall())
        plans.append({"sql": sql, "ms": ms, "plan": plan})
    return plans


def sample_reports(n: int, rng: random.Random) -> list[tuple[Any, Any]]:
    """``slow`` and ``finished`` reports of n distinct requests, as the reporter gets them."""
    from slowwatch.core.profile import FrozenProfile
    from slowwatch.report import Report, SourceFrame

    pairs = []
    endpoints = routes(random.Random(7))
    for _ in range(n):
        route, method, view = rng.choice(endpoints)
        app = view.split(".")[0]
        frames = tuple(
            SourceFrame(f, rng.randint(20, 900), fn, mod, line)
            for f, fn, mod, line in stack_of(app, rng)
        )
        started = time.time() - 4.0
        common: dict[str, Any] = {
            "id": f"{rng.getrandbits(128):032x}",
            "method": method,
            "url": concrete(route, rng),
            "view": view,
            "route": route,
            "host": "shop.example.com",
            "hostname": "web-1",
            "pid": os.getpid(),
            "thread_id": rng.getrandbits(47),
            "thread_name": "MainThread",
            "started_at": started,
            "threshold": 1.0,
            "user_id": "42",
        }
        sql = sql_doc(rng)
        slow_sql = {"count": sql["count"] // 2, "time": sql["time"] / 2}
        slow_sql["in_flight"] = {
            "sql": sql["slowest"][0]["sql"],
            "alias": "default",
            "elapsed": 0.8,
        }
        slow = Report(
            kind="slow",
            elapsed=1.0,
            late_by=0.002,
            frames=frames,
            process=process_doc(rng),
            sql=slow_sql,
            state="db",  # what the sampler says of a thread in a query
            **common,  # type: ignore[arg-type]
        )
        profile = FrozenProfile(
            interval=0.05,
            samples=60,
            stacks=tuple(profile_stacks(app, rng)),
            states=(("db", 35), ("cpu", 20), ("io", 5)),
            cpu_time=1.1,
        )
        # As build_report() makes it: the request thread does not say its name.
        finished = Report(
            kind="finished",
            elapsed=3.4,
            status_code=200,
            profile=profile,
            sql=sql,
            **{**common, "thread_name": ""},  # type: ignore[arg-type]
        )
        pairs.append((slow, finished))
    return pairs


def writes(n: int) -> dict[str, Any]:
    from django.db import connections

    from slowwatch.models import SlowRequest
    from slowwatch.reporters.database import DatabaseReporter

    reporter = DatabaseReporter()
    pairs = sample_reports(n + 1, random.Random(11))
    # Warm-up (the first handle also runs retention, at most once an hour).
    for report in pairs[0]:
        reporter.handle(report)
    reporter.idle()
    # What the reporter thread does for a slow request on its own: the queue
    # runs empty after each of its reports, and idle() closes the connection,
    # so each transition opens one.
    slow_ms, finished_ms, both = [], [], []
    for slow, finished in pairs[1:]:
        t0 = time.perf_counter()
        reporter.handle(slow)
        reporter.idle()
        t1 = time.perf_counter()
        reporter.handle(finished)
        reporter.idle()
        t2 = time.perf_counter()
        slow_ms.append((t1 - t0) * 1000)
        finished_ms.append((t2 - t1) * 1000)
        both.append((t2 - t0) * 1000)
    # The same writes in a burst (the queue never empty): one connection for all.
    kept = []
    for slow, finished in sample_reports(n, random.Random(12)):
        t0 = time.perf_counter()
        reporter.save(slow)
        reporter.save(finished)
        kept.append((time.perf_counter() - t0) * 1000)
    connections[reporter.alias].close()
    ids = [slow.id for slow, _ in pairs]
    stored = SlowRequest.objects.filter(request_id__in=ids, state="finished").count()
    if reporter.counts["dropped"] or stored != len(ids):
        raise RuntimeError(
            f"writes went wrong: {dict(reporter.counts)}, {stored}/{len(ids)} stored"
        )
    return {"n": n, "both": both, "slow": slow_ms, "finished": finished_ms, "kept_open": kept}


def project_sources(root: str) -> None:
    """The project's source files, so that the reporter reads real lines around its frames."""
    global APP
    APP = os.path.join(root, "src")
    for app in APPS:
        os.makedirs(os.path.join(APP, app))
        for mod in ("views", "services", "selectors", "models", "serializers", "utils"):
            lines = [
                f"    value_{n} = compute(request, item_{n}, timeout=30)  # line {n}"
                for n in range(1, 1001)
            ]
            Path(APP, app, f"{mod}.py").write_text("\n".join(lines) + "\n")


def child(db: str, quick: bool, result: Path, only: str) -> None:
    tmp = tempfile.mkdtemp(prefix="slowwatch-storage-")
    try:
        project_sources(tmp)
        configure(db, os.path.join(tmp, "bench.sqlite3"))
        run_child(db, quick, result, only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_child(db: str, quick: bool, result: Path, only: str) -> None:
    from django.core.management import call_command
    from django.db import connection

    from slowwatch.models import SlowRequest

    reps = 3 if quick else 5
    found: dict[str, Any] = {"db": db, "rows": ROWS, "reps": reps}
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        if db == "sqlite":
            cursor.execute("SELECT sqlite_version()")
            found["version"] = "SQLite " + cursor.fetchone()[0]
            cursor.execute("PRAGMA journal_mode")
            found["journal_mode"] = cursor.fetchone()[0]
        else:
            cursor.execute("SHOW server_version")
            found["version"] = "PostgreSQL " + cursor.fetchone()[0]
    note(f"{found['version']}: seeding {ROWS:,} rows")
    seconds, _ = seed(ROWS)
    found["seed_seconds"] = seconds
    if db == "postgresql":
        t0 = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {SlowRequest._meta.db_table}")  # what autovacuum does
            cursor.execute("CHECKPOINT")  # not measured while the seeding's writes are flushed
        found["vacuum_seconds"] = time.perf_counter() - t0
    with connection.cursor() as cursor:
        if db == "sqlite":
            found["size_bytes"] = os.path.getsize(connection.settings_dict["NAME"])
        else:
            cursor.execute("SELECT pg_total_relation_size(%s)", [SlowRequest._meta.db_table])
            found["size_bytes"] = cursor.fetchone()[0]
    note(f"  seeded in {seconds:.0f} s, {found['size_bytes'] / 2**20:,.0f} MiB; measuring")

    found["window_rows"] = {}
    found["measures"] = found["explain"] = {}
    if only != "writes":
        admin_pages(db, reps, found)
    n = 50 if quick else 200
    note(f"  writes: {n} slow + finished pairs")
    found["writes"] = writes(n)
    result.write_text(json.dumps(found, default=str))


def admin_pages(db: str, reps: int, found: dict[str, Any]) -> None:
    """The endpoint summary and the admin's pages, into ``found``."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from django.utils.http import urlencode

    from slowwatch.admin import summary
    from slowwatch.models import SlowRequest

    rows = SlowRequest.objects.using("default")
    measures: dict[str, Any] = {}
    for key in ("24h", "30d"):
        _, length = summary.window(key)
        found["window_rows"][key] = rows.filter(started_at__gte=summary.since(length)).count()
        measures[f"summary_{key}"] = timed(
            lambda length=length: summary.endpoints(rows, summary.since(length)), reps
        )

    user = get_user_model().objects.create(username="bench", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)

    def page(url: str) -> Any:
        def get() -> None:
            response = client.get(url)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url}: {response.status_code}")
            len(response.content)

        return get

    changelist = reverse("admin:slowwatch_slowrequest_changelist")
    top = summary.endpoints(rows, summary.since(timedelta(days=30)))[0]
    pk = (
        rows.filter(state="finished", route=top.route)
        .order_by("-started_at")
        .values_list("pk", flat=True)[0]
    )
    busiest = {"route": top.route, "method": top.method}
    pages = {
        "page_summary_30d": reverse("admin:slowwatch_summary") + "?window=30d",
        "page_summary_24h": reverse("admin:slowwatch_summary"),
        "page_changelist": changelist,
        "page_changelist_endpoint": f"{changelist}?{urlencode(busiest)}",
        "page_detail": reverse("admin:slowwatch_slowrequest_change", args=[pk]),
    }
    found["urls"] = pages
    for name, url in pages.items():
        note(f"  {name}")
        measures[name] = timed(page(url), reps)
    found["explain"] = {
        name: explain(db, measures[name]["_recorded"]) for name in ("summary_24h", "summary_30d")
    }
    for name in ("page_changelist", "page_changelist_endpoint", "page_detail"):
        slow = [q for q in measures[name]["_recorded"] if q[2] > 50]
        found["explain"][name] = explain(db, slow)
    for m in measures.values():
        del m["_recorded"]
    found["measures"] = measures


# =============================================================================
# Parent: start the children, print the table
# =============================================================================


def postgres_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG) as conn:
        conn.execute(sql)


def run(db: str, quick: bool, only: str) -> dict[str, Any] | str:
    """The child's figures, or why there are none."""
    if db == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "skipped: psycopg is not installed (pip install 'psycopg[binary]')"
        try:
            postgres_admin(f"DROP DATABASE IF EXISTS {PG_NAME}")
            postgres_admin(f"CREATE DATABASE {PG_NAME}")
        except Exception as exc:  # noqa: BLE001 - any reason to skip is worth saying
            return f"skipped: PostgreSQL at {PG['host']}:{PG['port']} unreachable ({exc})".strip()
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp, "result.json")
        args = [sys.executable, "-W", "ignore::DeprecationWarning", __file__, "--child", db]
        args += ["--result", str(result), "--only", only] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(args, stdout=sys.stderr)
        finally:
            if db == "postgresql":
                try:
                    postgres_admin(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
                except Exception as exc:  # noqa: BLE001
                    note(f"could not drop {PG_NAME}: {exc}")
        if proc.returncode or not result.exists():
            return f"failed: the child exited with {proc.returncode} (see above)"
        return json.loads(result.read_text())


def verdict(value: float, target: float, strict: bool) -> str:
    ok = value < target if strict else value <= target
    return "pass" if ok else "**FAIL**"


def spread(runs: list[float]) -> str:
    return f"{min(runs):,.0f}–{max(runs):,.0f}"


def table(results: dict[str, dict[str, Any] | str]) -> None:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    ok = {db: r for db, r in results.items() if isinstance(r, dict)}
    out("| measurement | database | median | min–max / p95 | target | result |")
    out("|---|---|---|---|---|---|")
    rows = [
        (
            "summary_24h",
            "Endpoint summary over {rows:,} rows: `endpoints()`, 24 h window ({n:,} rows)",
            "24h",
        ),
        (
            "summary_30d",
            "Endpoint summary over {rows:,} rows: `endpoints()`, 30 d window ({n:,} rows)",
            "30d",
        ),
        (
            "page_summary_30d",
            "Endpoint summary over {rows:,} rows: admin page, `?window=30d`",
            None,
        ),
        (
            "page_summary_24h",
            "Endpoint summary over {rows:,} rows: admin page, default 24 h",
            None,
        ),
    ]
    for key, label, window in rows:
        for db, r in ok.items():
            if key not in r["measures"]:  # --only writes
                continue
            m = r["measures"][key]
            n = r["window_rows"][window] if window else 0
            text = label.format(n=n, rows=r["rows"])
            out(
                f"| {text} | {names[db]} | {m['median']:,.0f} ms | {spread(m['runs'])} ms | "
                f"< {SUMMARY_TARGET_MS:.0f} ms | {verdict(m['median'], SUMMARY_TARGET_MS, True)} |"
            )
    for db, r in ok.items():
        w = r["writes"]
        target = f"≤ {WRITE_TARGET_MS:g} ms" if db == "sqlite" else "(information)"
        result = (
            verdict(statistics.median(w["both"]), WRITE_TARGET_MS, False)
            if db == "sqlite"
            else "–"
        )
        journal = f", journal_mode={r['journal_mode']}" if db == "sqlite" else ""
        out(
            f"| Insert + update per slow request ({w['n']} requests, a connection per "
            f"report{journal}) | {names[db]} | "
            f"{statistics.median(w['both']):.2f} ms | p95 {pct(w['both'], 95):.2f} ms | "
            f"{target} | {result} |"
        )
        out(
            f"| … of which `slow` insert / `finished` update | {names[db]} | "
            f"{statistics.median(w['slow']):.2f} / {statistics.median(w['finished']):.2f} ms | "
            f"p95 {pct(w['slow'], 95):.2f} / {pct(w['finished'], 95):.2f} ms | | |"
        )
        out(
            f"| … the same in a burst, one connection (`save()` alone) | {names[db]} | "
            f"{statistics.median(w['kept_open']):.2f} ms | "
            f"p95 {pct(w['kept_open'], 95):.2f} ms | | |"
        )
    for key, label in (
        ("page_changelist", "Change list page ({rows:,} rows)"),
        ("page_changelist_endpoint", "Change list of the busiest endpoint (the summary's link)"),
        ("page_detail", "Detail page of a finished request"),
    ):
        for db, r in ok.items():
            if key not in r["measures"]:
                continue
            m = r["measures"][key]
            out(
                f"| {label.format(rows=r['rows'])} | {names[db]} | {m['median']:,.0f} ms | "
                f"{spread(m['runs'])} ms | "
                "(information) | – |"
            )
    for db, r in results.items():
        if isinstance(r, str):
            out(f"| (all) | {names[db]} | | | | {r} |")
    out()
    for db, r in ok.items():
        extra = f", VACUUM ANALYZE {r['vacuum_seconds']:.0f} s" if "vacuum_seconds" in r else ""
        out(
            f"{names[db]} ({r['version']}): {r['rows']:,} rows seeded in "
            f"{r['seed_seconds']:.0f} s "
            f"(not timed){extra}; table {r['size_bytes'] / 2**20:,.0f} MiB; "
            f"median of {r['reps']} runs after one warm-up."
        )
    out()


def statements(results: dict[str, dict[str, Any] | str]) -> None:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    out("## Where the time goes: statements per page (one more run, recorded)")
    out()
    out("| page | database | statements | in the database | slowest statement |")
    out("|---|---|---|---|---|")
    for db, r in results.items():
        if not isinstance(r, dict):
            continue
        for key, m in r["measures"].items():
            slowest = m["slowest"][0] if m["slowest"] else {"sql": "", "ms": 0}
            sql = " ".join(slowest["sql"].split())
            sql = sql if len(sql) <= 90 else sql[:89] + "…"
            out(
                f"| {key} | {names[db]} | {m['queries']} | {m['query_ms']:,.0f} ms | "
                f"{slowest['ms']:,.0f} ms `{sql}` |"
            )
    out()
    out("## Query plans")
    for db, r in results.items():
        if not isinstance(r, dict):
            continue
        for key, plans in r["explain"].items():
            for plan in plans:
                sql = " ".join(plan["sql"].split())
                out()
                out(f"### {names[db]}, {key}: {plan['ms']:,.0f} ms")
                out()
                out("```")
                out(sql if len(sql) <= 400 else sql[:399] + "…")
                out("--")
                out(plan["plan"])
                out("```")
    out()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 runs instead of 5, 50 writes instead of 200"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument(
        "--db", default="sqlite,postgresql", help="comma-separated subset of: sqlite, postgresql"
    )
    parser.add_argument(
        "--only",
        choices=["all", "writes"],
        default="all",
        help="'writes': measure only the reporter's writes (the table is still seeded)",
    )
    parser.add_argument("--child", choices=["sqlite", "postgresql"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    # For trying the script out only: the targets are about 100,000 rows.
    parser.add_argument("--rows", type=int, default=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["SLOWWATCH_BENCH_ROWS"] = str(args.rows)
    if args.child:
        child(args.child, args.quick, args.result, args.only)
        return

    import django

    out("# slowwatch storage benchmark")
    out()
    out(
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    out()
    results: dict[str, dict[str, Any] | str] = {}
    for db in args.db.split(","):
        results[db] = run(db, args.quick, args.only)
    table(results)
    statements(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
