"""Call records: one JSON line per ended call in ``[server] cdr_file``.

Every call gets a line, joined or not: a call that reached a room or the
receptionist when it ends (BYE, hang-up, cancel, timeout), and an INVITE
refused with a final status (404, 403, 488, 503...) when it is refused. The
records come from the ``call_ended`` event of the EventBus (sipconf/events.py);
the fields are those of SPEC section 13::

    {"call_id": ..., "from": "101", "to": "800", "flow": "room", "room": "800",
     "conference": "1234", "start": "2026-11-30T22:40:01.123Z",
     "answer": "2026-11-30T22:40:01.130Z", "end": "2026-11-30T22:41:02.500Z",
     "duration_s": 61.37, "end_reason": "caller hung up (BYE)",
     "codec": "PCMU/8000", "srtp": false, "moderator": false}

Fields that do not apply are null (``answer`` of a refused call, ``room`` of
a receptionist call that never reached one...). ``duration_s`` is the time
from answer to end (0 when not answered).

Writing is off the event loop: the subscriber only puts the line on a queue;
a thread appends batches to the file, opened for each batch (so a rotated
file is followed). A file that cannot be written is logged once (until a
write succeeds again) and its lines are counted as lost.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from .events import Event

log = logging.getLogger("sipconf.cdr")

FIELDS = ("call_id", "from", "to", "flow", "room", "conference", "start", "answer", "end", "duration_s",
          "end_reason", "codec", "srtp", "moderator")
_STOP = None


def record_of(event: Event) -> dict[str, Any]:
    """The call record of a ``call_ended`` event: every field, null where absent."""
    return {name: event.get(name) for name in FIELDS}


class CdrWriter:
    """Subscribes to ``call_ended`` and appends one JSON line per call to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path  # may change on reload: the next batch goes to the new file
        self.lines_written = 0
        self.lines_lost = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._failing = False
        self._thread: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        """EventBus subscriber (event loop): queue the line, nothing more."""
        if event.get("event") != "call_ended" or not self.path:
            return
        line = json.dumps(record_of(event), ensure_ascii=False, separators=(", ", ": ")) + "\n"
        self._queue.put(line)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cdr writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop the thread (bounded by ``timeout``)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            lines = [self._queue.get()]
            while True:  # everything already queued goes in one write
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in lines
            lines = [line for line in lines if line is not _STOP]
            if lines:
                self._append(lines)
            if stop:
                return

    def _append(self, lines: list[str]) -> None:
        path = self.path
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(lines))
        except OSError as error:
            self.lines_lost += len(lines)
            if not self._failing:
                self._failing = True
                log.error("cdr_file %s cannot be written (%s): call records are lost until it can",
                          path, error.strerror or error)
            return
        if self._failing:
            self._failing = False
            log.info("cdr_file %s is writable again", path)
        self.lines_written += len(lines)
