"""SIGTERM and SIGINT end a command with the conventional status (143, 130), through Python's
exception path, so every open MLflow run is closed as KILLED with the reason on the way out;
and a process this project starts ends with the process that started it.

Lightning's own SIGTERM handling raises a SystemExit without a code (exit status 0): under SLURM,
make or `&&` a killed run would look like a success. Entry points call `exit_on_signals()`;
Lightning composes its handler with ours while it trains.

A process killed with SIGKILL runs no code, so its children must notice on their own: a child
calls `die_with(pid)` and gets SIGTERM when `pid` ends (Linux's PR_SET_PDEATHSIG for a direct
parent, else a thread that polls `pid`), which unwinds it like any SIGTERM, with the reason
"process P that started this one ended". Processes started through a command line (a Hydra
multirun and its jobs, whatever the launcher) learn whom to follow from $FLATMINIMA_OWNER_PID
(`follow_owner`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

OWNER_ENV = "FLATMINIMA_OWNER_PID"  # the pid whose end ends the process that reads it
POLL_S = 0.5  # how often a watch thread looks at the process it follows
ORPHAN_GRACE_S = 30.0  # after SIGTERM, how long an orphan may take to close its runs
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Terminated(SystemExit):
    """Raised by the handlers below: exit status 128 + the signal number. `reason` names the
    signal, and the process that ended when that is why it came (`orphan_cause`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        cause = orphan_cause()
        if cause is None and signum == signal.SIGTERM and _owner_is_parent:
            cause = _settled_orphan_cause()
        name = signal.Signals(signum).name
        self.reason = f"{name}: {cause}" if cause else name


REPEAT_WINDOW_S = 5.0  # a signal repeated this soon after the first is the same request
_deferring = False  # inside `deferred()`
_pending: int | None = None  # a signal that came while deferring
_raised_at: dict[int, float] = {}  # when each signal last raised Terminated


def _raise_terminated(signum, frame) -> None:
    """Raise Terminated, unless the same signal did so moments ago: one request to stop can
    arrive several times (the parent-death signal once per thread of a dying parent; a
    terminal's and then a parent's SIGTERM), and a second exception would cut short the
    unwinding of the first, which closes the runs."""
    global _pending
    if _deferring:
        _pending = signum
        return
    now = time.monotonic()
    if now - _raised_at.get(signum, -math.inf) < REPEAT_WINDOW_S:
        return
    _raised_at[signum] = now
    raise Terminated(signum)


def exit_on_signals() -> None:
    """Install the handlers (main thread only, as Python requires)."""
    _raised_at.clear()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_terminated)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM / SIGINT until the block ends, then raise for the one that came. For the
    calls into a tracking store: an exception raised in the middle of one (of a sqlite
    transaction) can leave the store locked for every other process; and the closing of a run
    must not be cut short by a second signal (a process group gets the terminal's, then its
    parent's)."""
    global _deferring, _pending
    if _deferring:  # nested: the outer block raises
        yield
        return
    _deferring, _pending = True, None
    try:
        yield
    finally:
        _deferring = False
        signum, _pending = _pending, None
        if signum is not None:  # the signal wins over an error of the block itself
            _raise_terminated(signum, None)


# --- ending with the process that started this one ------------------------------------------

_owner: int | None = None  # the process this one follows (die_with)
_owner_identity: tuple | None = None  # its identity when followed (pid reuse)
_owner_is_parent = False


def _identity(pid: int) -> tuple | None:
    """What tells process `pid` apart from a later one with the same id (its start time, where
    /proc exists); None when there is no such process, or only its zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return (pid,)
    return None if fields[0] in ("Z", "X") else (pid, fields[19])


def orphan_cause() -> str | None:
    """'process P that started this one ended' once the followed process has ended, else None."""
    if _owner is None:
        return None
    if _owner_is_parent:
        gone = os.getppid() != _owner or _identity(_owner) is None
    else:
        gone = _identity(_owner) != _owner_identity
    return f"process {_owner} that started this one ended" if gone else None


def _settled_orphan_cause(wait_s: float = 0.2) -> str | None:
    """`orphan_cause` once a parent that is being killed has ended: Linux sends the parent-death
    signal as the parent's first thread exits, a moment before the process is seen gone."""
    deadline = time.monotonic() + wait_s
    while (cause := orphan_cause()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return cause


def _set_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` when the parent ends; False where prctl is not there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(pid: int, identity: tuple | None) -> None:
    while _identity(pid) == identity:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # unwinds the main thread: runs closed as KILLED
    time.sleep(ORPHAN_GRACE_S)
    os._exit(128 + signal.SIGTERM)  # something caught the SIGTERM and went on: end anyway


def die_with(pid: int, parent: bool = False) -> None:
    """End this process with SIGTERM when process `pid` ends (it must have installed
    `exit_on_signals` to close its runs on the way); at once if it has already ended.

    `parent`: `pid` is this process's parent and the thread that started it lives as long as
    it does (the signal comes when that thread ends), so Linux itself can send the signal.
    Otherwise a daemon thread polls `pid` every POLL_S and, if the SIGTERM does not end this
    process within ORPHAN_GRACE_S, exits it."""
    global _owner, _owner_identity, _owner_is_parent
    if _owner == pid:
        return
    _owner, _owner_identity = pid, _identity(pid)
    _owner_is_parent = parent and _set_parent_death_signal(signal.SIGTERM)
    if orphan_cause() is not None:  # it ended before this call: nothing is open yet
        print(f"stopping: {orphan_cause()}", file=sys.stderr)
        exit_now(128 + signal.SIGTERM)
    if not _owner_is_parent:
        thread = threading.Thread(
            target=_watch, args=(pid, _owner_identity), name=f"die-with-{pid}", daemon=True
        )
        thread.start()


def follow_owner() -> None:
    """`die_with` the process named by $FLATMINIMA_OWNER_PID, if set to another process."""
    value = os.environ.get(OWNER_ENV, "")
    if value.isdigit() and int(value) != os.getpid():
        die_with(int(value))


def owner_env() -> dict[str, str]:
    """The environment of a child process that must end with this one (`follow_owner`)."""
    return {**os.environ, OWNER_ENV: str(os.getpid())}


def exit_now(status: int) -> None:
    """End this process at once with `status` (its runs are closed): for a worker whose pool
    would otherwise take the next task, or wait for one from a parent that is gone."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
