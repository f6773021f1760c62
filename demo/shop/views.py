"""Three pages: one fast, one slow in the database, one slow in Python."""

from __future__ import annotations

import time

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


def sales_figures(rows: int) -> int:
    # A recursive CTE that SQLite grinds through for a couple of seconds.
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "SELECT count(*) FROM n WHERE i %% 7 = 3",
            [rows],
        )
        return int(cursor.fetchone()[0])


def report(request: HttpRequest) -> HttpResponse:
    figures = sales_figures(6_000_000)
    return HttpResponse(f"report: {figures}")


def score(customer: int) -> float:
    total = 0.0
    for i in range(1, 20_000):
        total += (customer * i) % 97 / i
    return total


def recommendations(request: HttpRequest) -> HttpResponse:
    best = max(range(300), key=score)
    return HttpResponse(f"recommended: {best}")


def export(request: HttpRequest) -> HttpResponse:
    time.sleep(2)
    return HttpResponse("export done")
