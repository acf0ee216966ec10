"""tracemalloc snapshots of a running server, to find what makes it grow.

Off unless the environment asks for it: ``SIPCONF_TRACEMALLOC=N`` (N >= 1
frames per traceback) makes ``sipconf serve`` start :mod:`tracemalloc` before
the server is built, and every ``SIGUSR2`` then writes a snapshot to
``$SIPCONF_TRACEMALLOC_DIR`` (default: the current directory) as
``sipconf-<pid>-<n>.tracemalloc`` (n = 1, 2, ...). Compare two of them with
``tracemalloc.Snapshot.load(a).compare_to(Snapshot.load(b), "lineno")`` (what
``scripts/soak --tracemalloc DIR`` does). See docs/diagnostics.md.

A diagnostic, not for production: tracing every allocation costs CPU on the
event loop, and taking a snapshot stops the loop for as long as it takes (a
full garbage collection first, so that the snapshot holds only what is still
reachable; then the snapshot itself).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Iterator, Mapping

log = logging.getLogger("sipconf.memtrace")

ENV_FRAMES = "SIPCONF_TRACEMALLOC"
ENV_DIR = "SIPCONF_TRACEMALLOC_DIR"


def frames_from(environ: Mapping[str, str]) -> int:
    """Frames per traceback asked for by ``SIPCONF_TRACEMALLOC`` (0: off).
    A value that is not a positive integer is logged and ignored: a
    diagnostic switch must not stop a server from starting."""
    raw = environ.get(ENV_FRAMES, "").strip()
    if not raw or raw == "0":
        return 0
    try:
        frames = int(raw)
    except ValueError:
        frames = -1
    if frames < 1:
        log.warning("%s=%r is not a number of frames (1 or more): tracemalloc stays off", ENV_FRAMES, raw)
        return 0
    return frames


def dump(directory: Path, numbers: Iterator[int]) -> Path:
    """Write a snapshot of what is allocated now; returns its path. The file
    appears whole (written under another name, then renamed)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot()
    path = directory / f"sipconf-{os.getpid()}-{next(numbers)}.tracemalloc"
    partial = path.with_name(path.name + ".partial")
    snapshot.dump(str(partial))
    os.replace(partial, path)
    current, peak = tracemalloc.get_traced_memory()
    log.info("tracemalloc snapshot %s: %.1f MiB traced (peak %.1f MiB)", path, current / 2**20, peak / 2**20)
    return path


def install(loop: asyncio.AbstractEventLoop, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Start tracing and take snapshots on SIGUSR2 if the environment asks;
    returns the snapshot directory, or None when off."""
    frames = frames_from(environ)
    if not frames:
        return None
    directory = Path(environ.get(ENV_DIR) or ".").resolve()
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    numbers = itertools.count(1)

    def on_signal() -> None:
        try:
            dump(directory, numbers)
        except OSError as error:
            log.error("tracemalloc snapshot not written to %s: %s", directory, error)

    loop.add_signal_handler(signal.SIGUSR2, on_signal)
    log.warning("tracemalloc on (%d frames; costs CPU): SIGUSR2 writes a snapshot to %s", frames, directory)
    return directory
