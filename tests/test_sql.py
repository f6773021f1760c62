"""Queries: normalizing, counting, the statement in flight, N+1."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client

from helpers import needs_postgres
from slowwatch import runtime
from slowwatch.core.sqlstats import MAX_STATEMENTS, REPEATED, SqlStats, normalize
from slowwatch.render import sql_lines, text
from slowwatch.sql import QueryTracker


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = ?"),
        ("SELECT * FROM t WHERE id IN (%s, %s, %s)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT * FROM t WHERE id IN (1,2,3)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT  a\n  FROM t2 WHERE x = %(x)s", "SELECT a FROM t2 WHERE x = ?"),
        ("SELECT * FROM t WHERE a = $1 AND b = :b", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT col1, t2.col3 FROM t2", "SELECT col1, t2.col3 FROM t2"),
        ("SELECT * FROM n WHERE i %% 7 = %s", "SELECT * FROM n WHERE i % ? = ?"),
    ],
)
def test_normalize(sql, shape):
    assert normalize(sql) == shape


def test_statements_are_folded_and_bounded():
    stats = SqlStats()
    for i in range(REPEATED + 2):
        stats.record(f"SELECT * FROM t WHERE id = {i}", 0.01)
    stats.record("UPDATE t SET x = 1", 0.5)
    summary = stats.summary()
    assert summary["slowest"][0]["sql"] == "UPDATE t SET x = ?"
    [repeated] = summary["repeated"]
    assert repeated["sql"] == "SELECT * FROM t WHERE id = ?" and repeated["count"] == REPEATED + 2
    for i in range(MAX_STATEMENTS + 10):
        stats.record(f"SELECT c{i} FROM t", 0.001)
    assert len(stats.statements) == MAX_STATEMENTS and stats.dropped > 0


@pytest.mark.django_db
def test_the_tracker_is_on_every_connection():
    connection.ensure_connection()
    trackers = [
        w
        for w in connection.execute_wrappers
        if isinstance(getattr(w, "__self__", None), QueryTracker)
    ]
    assert len(trackers) == 1


def reports(collected, kind):
    runtime.flush(5)
    return [r for r in collected.reports if r.kind == kind]


@pytest.mark.django_db
def test_a_slow_query_is_reported_in_flight(collected):
    assert Client().get("/slow-sql/?rows=3000000").status_code == 200
    [slow] = reports(collected, "slow")
    current = slow.sql["in_flight"]
    assert current["sql"].startswith("WITH RECURSIVE n(i) AS (SELECT ? UNION ALL")
    assert current["alias"] == "default" and current["elapsed"] >= 0.25
    written = text(slow)
    assert "\nSQL so far: no query finished yet\n" in written
    assert "on database 'default': WITH RECURSIVE" in written
    [done] = reports(collected, "finished")
    assert done.sql["count"] == 1 and done.sql["time"] > 0.3
    assert done.sql["in_flight_seen"][0]["sql"] == current["sql"]
    assert "3000000" not in sql_lines(slow) + sql_lines(done)  # parameters never kept
    assert "\nSQL in all: 1 query finished, " in sql_lines(done)


@pytest.mark.django_db
def test_repeated_queries_after_the_threshold_look_like_n_plus_one(collected):
    assert Client().get("/n-plus-one/?s=0.5").status_code == 200
    [done] = reports(collected, "finished")
    [repeated] = done.sql["repeated"]
    assert repeated == {**repeated, "sql": "SELECT ?", "count": 12}
    assert "Repeated x12 (N+1?): SELECT ?" in text(done)


@needs_postgres
@pytest.mark.django_db(databases=["default", "pg"])
def test_a_query_waiting_in_postgresql(collected):
    assert Client().get("/pg-sleep/?s=1").status_code == 200
    [slow] = reports(collected, "slow")
    current = slow.sql["in_flight"]
    assert current == {**current, "sql": "SELECT pg_sleep(?)", "alias": "pg"}
    assert "In flight for 0." in text(slow)
    assert "s on database 'pg': SELECT pg_sleep(?)" in text(slow)
    [done] = reports(collected, "finished")
    states = dict(done.profile.states)
    assert max(states, key=states.__getitem__) == "db", states
    assert "in the database" in text(done)
