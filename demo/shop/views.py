"""Three pages: one fast, one slow in the database, one slow in Python."""

from __future__ import annotations

import functools
import sqlite3
import time
from contextlib import closing

from django.db import connection
from django.http import HttpRequest, HttpResponse

from shop.models import Order

INDEX = """<!doctype html><title>slowwatch demo shop</title>
<h1>slowwatch demo shop</h1>
<p>Every page slower than 1 s is reported on the console where the demo runs.</p>
<ul>
<li><a href="/orders/">/orders/</a>: fast</li>
<li><a href="/report/?token=s3cret">/report/</a>: slow: a sales report with a heavy SQL query</li>
<li><a href="/recommendations/">/recommendations/</a>: slow: a pure-Python loop</li>
<li><a href="/export/">/export/</a>: has its own 5 s threshold, takes 2 s: not reported</li>
</ul>"""


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(INDEX)


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def orders(request: HttpRequest) -> HttpResponse:
    count = Order.objects.count()
    return HttpResponse(f"{count} orders")


#: How long each slow page takes, whatever the speed of the machine.
SLOW_FOR = 2.0
#: A recursive CTE that SQLite grinds through row by row.
SALES = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
    "SELECT count(*) FROM n WHERE i %% 7 = 3"
)


@functools.cache
def rows_for(seconds: float) -> int:
    """How many rows the sales query counts in ``seconds`` on this machine.

    Timed once per process on a private in-memory SQLite, outside Django, so
    that the timing is not one of the request's queries.
    """
    probe = 300_000
    with closing(sqlite3.connect(":memory:")) as db:
        start = time.perf_counter()
        db.execute(SALES.replace("%s", "?").replace("%%", "%"), [probe]).fetchone()
        took = time.perf_counter() - start
    return max(probe, int(probe * seconds / max(took, 1e-6)))


def sales_figures(rows: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(SALES, [rows])
        return int(cursor.fetchone()[0])


def report(request: HttpRequest) -> HttpResponse:
    figures = sales_figures(rows_for(SLOW_FOR))
    return HttpResponse(f"report: {figures}")


def score(customer: int) -> float:
    total = 0.0
    for i in range(1, 20_000):
        total += (customer * i) % 97 / i
    return total


def recommendations(request: HttpRequest) -> HttpResponse:
    # Scores customers for SLOW_FOR seconds, all of it in Python.
    deadline = time.monotonic() + SLOW_FOR
    best, customer = (0.0, 0), 0
    while time.monotonic() < deadline:
        best = max(best, (score(customer), customer))
        customer += 1
    return HttpResponse(f"recommended: {best[1]}")


def export(request: HttpRequest) -> HttpResponse:
    time.sleep(2)
    return HttpResponse("export done")
