"""Is the slow request burning CPU, or waiting, and on what?

At every sample the monitor asks a few cheap questions about the serving thread:

* how much CPU it used since the last sample (its own CPU clock, from
  ``time.pthread_getcpuclockid``, which costs no system call);
* on Linux, which system call it is blocked in, from the thread's procfs
  ``syscall`` entry (``running`` when it is on a CPU);
* how much CPU the rest of the process used meanwhile: a thread blocked on a
  futex while the others keep a core busy is waiting for the GIL, not for a
  lock of its own;
* on Linux, how long it waited in the run queue (procfs ``schedstat``): a
  thread ready to run that gets no CPU is waiting for one, because the host
  is saturated, and that is no wait on I/O.

Together with the innermost Python frames (database driver? ``threading``
lock?) that gives each sample a state (:mod:`slowwatch.core.states`). Where
neither source exists the sample is classified from the frames alone.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence

from slowwatch.core.frames import Frame
from slowwatch.core.states import CPU, DB, GIL, IO, LOCK, LOOP, OTHER, RUNNABLE, SLEEP, THREAD

DB_MODULES = (
    "django.db.backends",
    "sqlite3",
    "psycopg",
    "psycopg2",
    "MySQLdb",
    "pymysql",
    "oracledb",
    "cx_Oracle",
    "mysql.connector",
)
LOCK_MODULES = ("threading", "queue", "asyncio.locks", "multiprocessing.synchronize")

_SYSCALLS = {
    # name: (x86_64, aarch64)
    "read": (0, 63),
    "poll": (7, None),
    "select": (23, None),
    "nanosleep": (35, 101),
    "connect": (42, 203),
    "accept": (43, 202),
    "sendto": (44, 206),
    "recvfrom": (45, 207),
    "recvmsg": (47, 212),
    "wait4": (61, 260),
    "futex": (202, 98),
    "clock_nanosleep": (230, 115),
    "epoll_wait": (232, None),
    "pselect6": (270, 72),
    "ppoll": (271, 73),
    "epoll_pwait": (281, 22),
    "accept4": (288, 242),
}
_ARCH = {"x86_64": 0, "amd64": 0, "aarch64": 1, "arm64": 1}.get(platform.machine().lower())
SYSCALLS: dict[int, str] = {}
if _ARCH is not None:
    for _name, _numbers in _SYSCALLS.items():
        _number = _numbers[_ARCH]
        if _number is not None:
            SYSCALLS[_number] = _name
SLEEP_CALLS = {"nanosleep", "clock_nanosleep"}
IO_CALLS = {"read", "poll", "select", "connect", "accept", "accept4", "sendto", "recvfrom"}
IO_CALLS |= {"recvmsg", "epoll_wait", "epoll_pwait", "pselect6", "ppoll", "wait4"}


def kernel_id(ident: int) -> int | None:
    """The kernel's id of the thread whose pthread id is ``ident`` (Linux).

    For threads Python did not start (granian's and other servers' own),
    which ``threading`` knows nothing of: Linux encodes the thread's id in its
    CPU clock id, ``~tid << 3 | flags``.
    """
    getcpuclockid = getattr(time, "pthread_getcpuclockid", None)
    if getcpuclockid is None or platform.system() != "Linux":
        return None
    try:
        tid = ~(getcpuclockid(ident) >> 3)
    except OSError:
        return None
    return tid if tid > 0 else None


def _open(path: str) -> int | None:
    """A procfs entry kept open and re-read with pread: cheaper than an open() per sample."""
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


class ThreadProbe:
    """Per-thread CPU clock and procfs entry of one serving thread."""

    def __init__(self, thread_id: int, native_id: int | None) -> None:
        self.thread_id = thread_id
        self.clock: int | None = None
        getcpuclockid = getattr(time, "pthread_getcpuclockid", None)
        if getcpuclockid is not None:
            try:
                self.clock = getcpuclockid(thread_id)
            except OSError:
                self.clock = None
        self._syscall_fd: int | None = None
        self._schedstat_fd: int | None = None
        if native_id is not None and SYSCALLS:
            self._syscall_fd = _open(f"/proc/self/task/{native_id}/syscall")
        if native_id is not None:
            self._schedstat_fd = _open(f"/proc/self/task/{native_id}/schedstat")
        self.cpu_total = 0.0
        #: Seconds spent ready to run but not running, since the threshold.
        self.queued_total = 0.0
        self._last_cpu = self.cpu()
        self._last_queued = self.queued()
        self._last_process = time.process_time()

    def cpu(self) -> float | None:
        if self.clock is None:
            return None
        try:
            return time.clock_gettime(self.clock)
        except OSError:  # the thread is gone
            self.clock = None
            return None

    def queued(self) -> float | None:
        """Seconds the thread has waited in the run queue so far (Linux), else None."""
        fd = self._schedstat_fd
        if fd is None:
            return None
        try:
            # "<ns on CPU> <ns waiting in the run queue> <time slices>"
            return int(os.pread(fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self._schedstat_fd = None
            os.close(fd)
            return None

    def syscall(self) -> str | None:
        """``running``, the name of the blocking system call, ``other``, or None."""
        if self._syscall_fd is None:
            return None
        try:
            fields = os.pread(self._syscall_fd, 64, 0).split(b" ", 3)
        except OSError:  # the thread is gone
            self.close()
            return None
        if fields[0].strip() == b"running":
            return "running"
        try:
            name = SYSCALLS.get(int(fields[0]), "other")
        except ValueError:
            return None
        # select()/poll() on no file descriptor at all is a sleep: Python 3.10's
        # time.sleep is select(0, NULL, NULL, NULL, timeout).
        if name in ("select", "pselect6") and fields[1:2] == [b"0x0"]:
            return "nanosleep"
        if name in ("poll", "ppoll") and fields[2:3] == [b"0x0"]:
            return "nanosleep"
        return name

    def close(self) -> None:
        for fd in (self._syscall_fd, self._schedstat_fd):
            if fd is not None:
                os.close(fd)
        self._syscall_fd = self._schedstat_fd = None

    def sample(self, frames: Sequence[Frame], wall_delta: float) -> str:
        """The category of this sample; also adds to :attr:`cpu_total`."""
        now, process, queued = self.cpu(), time.process_time(), self.queued()
        cpu_delta = None
        if now is not None and self._last_cpu is not None:
            cpu_delta = max(0.0, now - self._last_cpu)
            self.cpu_total += cpu_delta
        queued_delta = None
        if queued is not None and self._last_queued is not None:
            queued_delta = max(0.0, queued - self._last_queued)
            self.queued_total += queued_delta
        others = None
        if wall_delta > 0:
            others = (process - self._last_process - (cpu_delta or 0.0)) / wall_delta
        self._last_cpu, self._last_process, self._last_queued = now, process, queued
        return classify(frames, self.syscall(), cpu_delta, wall_delta, others, queued_delta)


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def is_lock_wait(frames: Sequence[Frame]) -> bool:
    """The innermost frame is in ``threading`` (or another lock module)."""
    return bool(frames) and _in(frames[-1].module, LOCK_MODULES)


#: Where a suspended greenlet waits on a lock, an event or a queue.
GREENLET_LOCK_MODULES = (
    "gevent.lock",
    "gevent._semaphore",
    "gevent.event",
    "gevent.queue",
    "asyncio.locks",
    "asyncio.queues",
)


#: Where an asyncio task awaits the thread that runs its sync code.
HANDOFF_MODULES = ("asgiref.sync", "asyncio.threads")


def classify_suspended(frames: Sequence[Frame], running: bool) -> str:
    """The state of a greenlet or an asyncio task: running (it holds its event
    loop), or suspended, waiting for what its innermost frames say (it only
    yields to wait)."""
    if running:
        return LOOP
    if any(_in(f.module, DB_MODULES) for f in frames[-8:]):
        return DB
    inner = frames[-1] if frames else None
    if inner is not None and inner.function == "sleep":
        return SLEEP
    if any(_in(f.module, GREENLET_LOCK_MODULES + LOCK_MODULES) for f in frames[-3:]):
        return LOCK
    if inner is not None and _in(inner.module, HANDOFF_MODULES):
        # Its sync code is not running on that thread (or the thread's stack
        # would have been taken): being handed over, or its result back.
        return THREAD
    return IO


def classify(
    frames: Sequence[Frame],
    syscall: str | None,
    cpu_delta: float | None,
    wall_delta: float,
    others: float | None = None,
    queued: float | None = None,
) -> str:
    """The state of one sample.

    ``others`` is the CPU the rest of the process used over the interval, in
    cores, and ``queued`` the seconds the thread waited in the run queue over
    it (None when unknown).
    """
    top = frames[-3:]
    if any(_in(f.module, DB_MODULES) for f in top):
        # In-process databases (SQLite) do their work on this thread: still the DB.
        return DB
    # The CPU clock over the whole interval beats the instantaneous state: a
    # spinning thread is often caught waiting for the GIL that the monitor
    # itself holds while it samples.
    if cpu_delta is not None and wall_delta > 0:
        if cpu_delta > wall_delta / 2:
            return CPU
        if queued is not None and queued > wall_delta / 4 and cpu_delta + queued > wall_delta / 2:
            # Ready to run for most of the interval, but on a CPU for less of it.
            return RUNNABLE
    elif syscall == "running":
        return CPU
    if syscall in SLEEP_CALLS:
        return SLEEP
    if frames and _in(frames[-1].module, LOCK_MODULES):
        return LOCK
    if syscall == "futex":
        # A futex with plain code on top: a C-level lock (``with lock:``), or
        # the GIL when the rest of the process is keeping a core busy.
        return GIL if others is not None and others > 0.5 else LOCK
    if syscall in IO_CALLS:
        return IO
    if syscall == "running":
        # In no system call, yet it got little CPU: it was waiting for one.
        return RUNNABLE
    return OTHER
