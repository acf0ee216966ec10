"""sipconf/cdr.py on its own: the writer thread, null fields, a new path
(reload), an unwritable file logged once."""

from __future__ import annotations

import json
import logging

from sipconf.cdr import FIELDS, CdrWriter
from sipconf.events import EventBus
from support import wait_until


def test_lines_have_every_field_and_only_call_ended_is_written(tmp_path):
    path = tmp_path / "cdr.jsonl"
    writer = CdrWriter(str(path))
    bus = EventBus()
    bus.subscribe(writer)
    bus.publish("call_started", call_id="a")
    bus.publish("call_ended", call_id="a", flow="room", room="800", duration_s=1.5, srtp=False,
                **{"from": "101", "to": "800"})
    bus.publish("call_ended", call_id="b", end_reason="404 Not Found", duration_s=0.0)
    writer.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["call_id"] for line in lines] == ["a", "b"]
    assert all(tuple(line) == FIELDS for line in lines)
    assert lines[0]["from"] == "101" and lines[0]["conference"] is None and lines[0]["srtp"] is False
    assert lines[1]["answer"] is None and lines[1]["end_reason"] == "404 Not Found"
    assert writer.lines_written == 2 and writer.lines_lost == 0


def test_unwritable_file_is_logged_once_then_recovery_and_a_new_path(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sipconf.cdr")
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = CdrWriter(str(blocker / "cdr.jsonl"))
    for i in range(3):
        writer({"event": "call_ended", "call_id": str(i)})
        assert wait_until(lambda: writer.lines_lost == i + 1, 5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot be written" in errors[0].getMessage()
    good = tmp_path / "cdr.jsonl"
    writer.path = str(good)  # as a configuration reload sets it
    writer({"event": "call_ended", "call_id": "x"})
    writer.close()
    assert json.loads(good.read_text())["call_id"] == "x"
    assert any("writable again" in r.getMessage() for r in caplog.records)
    assert writer.lines_lost == 3 and writer.lines_written == 1
