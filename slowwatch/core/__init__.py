"""slowwatch's core: everything that knows nothing of Django.

The watchdog and its deadline heap (:mod:`~slowwatch.core.watchdog`), the
watch record (:mod:`~slowwatch.core.watch`), where a request's stack is
under each serving model (:mod:`~slowwatch.core.locate`), snapshots
(:mod:`~slowwatch.core.snapshots`), sampling and its CPU budget
(:mod:`~slowwatch.core.sampling`), frame walking
(:mod:`~slowwatch.core.frames`), thread states (:mod:`~slowwatch.core.states`,
:mod:`~slowwatch.core.threadstate`), the profile and its exports, SQL
statistics, redaction, safe repr, the bounded dispatcher, process figures, the
records the core emits and the internal error log. A test imports every module
here with Django made unimportable; the Django edge (``slowwatch.*``) is built
on top of it and nothing here reaches back.
"""
