"""Views with a known shape, so tests can assert the exact line reported."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from slowwatch.decorators import slowwatch_exempt, slowwatch_threshold


def _seconds(request: HttpRequest, default: float = 1.0) -> float:
    return float(request.GET.get("s", default))


def fast(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def sleep(request: HttpRequest) -> HttpResponse:
    """Sleeps ``s`` seconds; with ``reported=1``, then holds on until it was reported.

    A request that ends just after its threshold goes unreported when the
    monitor thread runs late on a busy machine (docs/limits.rst): tests that
    need every such request reported opt in to the hold, which ends once the
    monitor has set ``request.slowwatch_id`` (at most 10 s). The hold is a
    function of its own, called from the last line, because tests assert the
    lines around the sleeping line (tests/test_sentry.py).
    """

    def reported() -> str | None:
        deadline = time.monotonic() + 10
        while (
            request.GET.get("reported") == "1"
            and getattr(request, "slowwatch_id", None) is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)  # the sleeping line
        return getattr(request, "slowwatch_id", None)

    seconds = _seconds(request)
    time.sleep(seconds)  # the sleeping line
    return JsonResponse({"pid": os.getpid(), "id": reported()})


def cpu(request: HttpRequest) -> HttpResponse:
    deadline = time.perf_counter() + _seconds(request)
    n = 0
    while time.perf_counter() < deadline:  # the spinning line
        n += 1
    return JsonResponse({"pid": os.getpid(), "n": n})


def descend(depth: int, seconds: float) -> None:
    if depth > 0:
        descend(depth - 1, seconds)
    else:
        time.sleep(seconds)


def deep(request: HttpRequest, depth: int) -> HttpResponse:
    """Sleeps ``depth`` calls deep: each request's stack tells which request it is."""
    descend(depth, _seconds(request))
    return JsonResponse({"pid": os.getpid(), "depth": depth})


def boom(request: HttpRequest) -> HttpResponse:
    time.sleep(_seconds(request))
    raise ValueError("boom")


@slowwatch_exempt
def exempt(request: HttpRequest) -> HttpResponse:
    time.sleep(_seconds(request))
    return HttpResponse("exempt")


@slowwatch_threshold(5)
def patient(request: HttpRequest) -> HttpResponse:
    time.sleep(_seconds(request))
    return HttpResponse("patient")


@slowwatch_threshold(0.1)
def impatient(request: HttpRequest) -> HttpResponse:
    time.sleep(_seconds(request))
    return HttpResponse("impatient")


@slowwatch_exempt
class ExemptView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        time.sleep(_seconds(request))
        return HttpResponse("exempt class")


@method_decorator(slowwatch_exempt, name="dispatch")
class ExemptDispatchView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        time.sleep(_seconds(request))
        return HttpResponse("exempt dispatch")


class SleepView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        time.sleep(_seconds(request))  # the class-based sleeping line
        return HttpResponse("class")


async def async_sleep(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(_seconds(request))  # the awaiting line
    return HttpResponse("async")


@slowwatch_exempt
async def async_exempt(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(_seconds(request))
    return HttpResponse("async exempt")


def phase_one(seconds: float) -> None:
    time.sleep(seconds)  # phase one


def phase_two(seconds: float) -> None:
    time.sleep(seconds)  # phase two


def phases(request: HttpRequest) -> HttpResponse:
    """Slow in one place, then in another: a profile must show both."""
    phase_one(float(request.GET.get("a", "1")))
    phase_two(float(request.GET.get("b", "1")))
    return JsonResponse({"pid": os.getpid()})


_held = threading.Lock()


def locked(request: HttpRequest) -> HttpResponse:
    """Waits for a lock another thread holds for ``s`` seconds."""
    seconds = _seconds(request)
    holding = threading.Event()

    def hold() -> None:
        with _held:
            holding.set()
            time.sleep(seconds)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    with _held:  # the waiting line
        pass
    holder.join()
    return JsonResponse({"pid": os.getpid()})


def slow_sql(request: HttpRequest) -> HttpResponse:
    """A recursive CTE that keeps SQLite busy for a while."""
    rows = int(request.GET.get("rows", "3000000"))
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "SELECT count(*) FROM n",
            [rows],
        )
        (count,) = cursor.fetchone()
    return JsonResponse({"pid": os.getpid(), "count": count})


def n_plus_one(request: HttpRequest) -> HttpResponse:
    """Slow first, then the same small query many times over."""
    time.sleep(_seconds(request, 0.5))
    with connection.cursor() as cursor:
        for i in range(12):
            cursor.execute("SELECT %s", [i])
    return JsonResponse({"pid": os.getpid()})


def pg_sleep(request: HttpRequest) -> HttpResponse:
    """Waits in PostgreSQL: the request thread is blocked on the server's answer."""
    with connections["pg"].cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [_seconds(request)])
    return JsonResponse({"pid": os.getpid()})


LAZY_EVALUATIONS: list[str] = []


def with_locals(request: HttpRequest) -> HttpResponse:
    """Locals a watchdog must render without evaluating anything."""
    from django.contrib.contenttypes.models import ContentType
    from django.utils.functional import SimpleLazyObject

    content_types = ContentType.objects.all()  # a QuerySet, never evaluated here
    lazy = SimpleLazyObject(lambda: LAZY_EVALUATIONS.append("evaluated") or "value")
    password = "canary-password-1"  # noqa: S105
    authorization = "Bearer canary-token-2"
    next_url = "/next/?access_token=canary-3&page=2"
    count = 42
    time.sleep(_seconds(request))
    return JsonResponse(
        {
            "unevaluated": content_types._result_cache is None,
            "lazy": lazy._wrapped is not None and not LAZY_EVALUATIONS,
            "seen": [password[:0], authorization[:0], next_url[:0], count],
        }
    )


def whoami(request: HttpRequest) -> HttpResponse:
    """Loads the user on the request thread, then is slow."""
    pk = request.user.pk
    time.sleep(_seconds(request, 0.5))
    return JsonResponse({"pk": pk})


@csrf_exempt
def sign_in(request: HttpRequest) -> HttpResponse:
    """Holds secrets in its locals while it is slow (for the canary tests)."""
    password = request.POST.get("password", "")
    api_key = request.headers.get("X-Api-Key", "")
    time.sleep(_seconds(request, 0.5))  # the slow sign-in line
    return JsonResponse({"ok": bool(password and api_key)})


#: Canaries the view below holds itself (the others come with the request).
JSON_CANARY = "c4n4ry-json-7d31"
DSN_CANARY = "c4n4ry-dsn-52e8"


@csrf_exempt
def holds_secrets(request: HttpRequest) -> HttpResponse:
    """Holds secrets in locals with harmless names while it is slow (tests/test_secrets.py).

    The names say nothing secret, so only what the values look like can mask them.
    """
    body = request.body
    headers = list(request.headers.items())
    payload = json.dumps({"user": "bob", "password": JSON_CANARY})
    dsn = f"postgres://bob:{DSN_CANARY}@db.example/app"
    time.sleep(_seconds(request, 0.8))
    return JsonResponse({"held": [len(body), len(headers), len(payload), len(dsn)]})


def counters(request: HttpRequest) -> HttpResponse:
    """This worker's :func:`slowwatch.runtime.counters`, and what each queue still
    holds (queued or being handled), for tests/test_faults.py.

    Counters only grow, and an item leaves a queue's ``pending`` only as a
    counter grows: when two readings of the counters around the reading of
    ``pending`` agree, all three belong to the same moment.
    """
    from slowwatch import runtime

    for _ in range(1000):
        before = runtime.counters()
        pending = {}
        queue = runtime.running_dispatcher()
        if queue is not None:
            pending["queue"] = queue.pending()
        # Only once the sinks exist (their counters say so): never made here.
        if any(" queue " in key for key in before):
            for reporter, sink in runtime.sinks():
                pending[type(reporter).__name__] = sink.pending()
        if runtime.counters() == before:
            break
    else:
        return JsonResponse({"error": "the counters never held still"}, status=503)
    return JsonResponse({"pid": os.getpid(), "counters": before, "pending": pending})


#: What ``holds_every_secret`` holds besides what its request brings, set by
#: tests/test_canaries.py: values never written in this file, whose lines
#: reports quote around each frame.
HELD: dict[str, str] = {}


@sensitive_variables("expected")
def compare_pin(request: HttpRequest, seconds: float) -> bool:
    """Slow with secrets under harmless names: only Django's decorator says to hide them."""
    expected = HELD.get("sensitive", "")
    given = request.POST.get("pin", "")
    time.sleep(seconds)  # the sensitive sleeping line
    return expected == given


@csrf_exempt
@sensitive_post_parameters("password", "pin")
def holds_every_secret(request: HttpRequest) -> HttpResponse:
    """Slow with every kind of secret in its locals (tests/test_canaries.py).

    What the request brought, as views hold it (its body, its form, its query,
    its cookies, its headers, its environ), and secrets of its own: under a
    secret name, in a list of header pairs, in JSON, in a DSN; then queries
    with a secret as a parameter and as a literal.
    """
    body = request.body
    form = request.POST.dict()
    query = request.GET.dict()
    jar = dict(request.COOKIES)
    headers = list(request.headers.items())
    meta = request.META
    api_secret = HELD.get("local", "")
    outgoing = [("Accept", "application/json"), ("X-Auth-Token", HELD.get("pairs", ""))]
    payload = json.dumps({"user": "bob", "password": HELD.get("json", "")})
    dsn = f"postgres://bob:{HELD.get('dsn', '')}@db.example/app"
    same = compare_pin(request, _seconds(request, 0.8))
    literal = HELD.get("sqlliteral", "").replace("'", "''")
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [HELD.get("sqlparam", "")])
        cursor.execute(f"SELECT '{literal}'")
    held = [body, form, query, jar, headers, meta, api_secret, outgoing, payload, dsn]
    return JsonResponse({"same": same, "held": len(held)})


def queries_around_sleep(request: HttpRequest) -> HttpResponse:
    """Queries, sleeps (cooperatively under gevent), queries again."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    time.sleep(_seconds(request, 0.8))  # the sleep between queries
    with connection.cursor() as cursor:
        cursor.execute("SELECT 2")
    return JsonResponse({"pid": os.getpid()})


def never_yields(request: HttpRequest) -> HttpResponse:
    """A CPU loop: under gevent, a greenlet that holds its worker's hub."""
    deadline = time.perf_counter() + _seconds(request)
    n = 0
    while time.perf_counter() < deadline:  # the loop that never yields
        n += 1
    return JsonResponse({"pid": os.getpid(), "n": n})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A response sent in chunks, slowly: the time is spent after the view returned."""
    seconds, count = _seconds(request, 1.5), 5

    def chunks() -> Iterator[str]:
        for n in range(count):
            time.sleep(seconds / count)  # the streaming line
            yield f"chunk {n}\n"

    return StreamingHttpResponse(chunks())


def sync_work(seconds: float) -> str:
    time.sleep(seconds)  # the sync work line
    return "done"


async def awaits_sync_work(request: HttpRequest) -> HttpResponse:
    """An async view whose time goes to sync work on asgiref's executor thread."""
    done = await sync_to_async(sync_work)(_seconds(request))
    return HttpResponse(done)


def slow_query(rows: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) "
            "SELECT count(*) FROM n",  # the slow query
            [rows],
        )
        (count,) = cursor.fetchone()
    return int(count)


async def awaits_orm(request: HttpRequest) -> HttpResponse:
    """An async view waiting for a slow query, which runs on the executor thread."""
    count = await sync_to_async(slow_query)(int(request.GET.get("rows", "3000000")))
    return JsonResponse({"count": count})


async def blocks_loop(request: HttpRequest) -> HttpResponse:
    """A coroutine that never awaits: every other request of the loop waits."""
    time.sleep(_seconds(request))  # the line that blocks the loop
    return HttpResponse("blocked")


async def spins_loop(request: HttpRequest) -> HttpResponse:
    deadline = time.perf_counter() + _seconds(request)
    n = 0
    while time.perf_counter() < deadline:  # the loop that spins the loop
        n += 1
    return HttpResponse(str(n))


async def async_descend(depth: int, seconds: float) -> None:
    if depth > 0:
        await async_descend(depth - 1, seconds)
    else:
        await asyncio.sleep(seconds)


async def async_deep(request: HttpRequest, depth: int) -> HttpResponse:
    """Awaits ``depth`` coroutines deep: each request's stack tells which it is."""
    await async_descend(depth, _seconds(request))
    return JsonResponse({"depth": depth})


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    """An async stream sent in chunks, slowly, after the view returned."""
    seconds, count = _seconds(request, 1.5), 5

    async def chunks() -> AsyncIterator[str]:
        for n in range(count):
            await asyncio.sleep(seconds / count)  # the async streaming line
            yield f"chunk {n}\n"

    return StreamingHttpResponse(chunks())
