"""Conference recording (SPEC 13): who starts and stops it, the notices, the
file names, events and metrics. The writing itself is mixer/record.py.

Entry points, all on the event loop:

- ``start_recording(room, conference)`` / ``stop_recording(room, conference)``
  / ``toggle_recording(room, conference)`` and ``recording(room, conference)``
  (room extension and conference ID): for the moderator's ``*7`` and the
  admin API. They answer the new state (True = recording).
- ``joined`` / ``conference_ended``: the ConferenceDirectory's hooks. A
  conference with ``auto_record = true`` starts recording when its first
  participant joins; a newcomer to a recorded conference hears the notice;
  the end of the conference (the last one left) stops and closes the file.
- ``stop_all`` + ``wait_closed``: server shutdown (SIGTERM) finalizes every
  file.

The conference hears "this conference is being recorded" when a recording
starts and "recording stopped" when it stops (also when it stops because the
disk failed). A notice never cuts a prompt a participant is hearing: it waits
for it to end (checked every 100 ms, given up after 30 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from mixer.engine import MIX_RATE
from mixer.record import Recorder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .config import Config, ConferenceConfig, RoomConfig
from .events import EventBus

log = logging.getLogger("sipconf.recording")

NOTICE_RETRY_S = 0.1
NOTICE_GIVE_UP_S = 30.0
PROMPT_STARTED = "recording_started"
PROMPT_STOPPED = "recording_stopped"


@dataclass(eq=False)
class Recording:
    room: str
    conference: str
    mixer_conference: object
    recorder: Recorder
    started: float = field(default_factory=time.monotonic)
    reason: str | None = None  # why it stopped, once it did
    announced: bool = False  # someone heard "this conference is being recorded"


def file_name(room: str, conference: str, fmt: str, when: float | None = None) -> str:
    """``{room extension}-{conference id}-{YYYYmmddTHHMMSSZ}.{format}``, UTC."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{room}-{conference}-{stamp}.{fmt}"


class Recordings:
    def __init__(self, *, config: Callable[[], Config], prompts: Callable[[], dict], media, conferences,
                 events: EventBus) -> None:
        self._config = config  # read at each start: a reload applies to the next recording
        self._prompts = prompts
        self._media = media  # mixer.engine.MediaEngine: set_recorder
        self._conferences = conferences  # ConferenceDirectory: live()
        self._events = events
        self._live: dict[tuple[str, str], Recording] = {}
        self._closing: set[Recording] = set()  # stopped, file not closed yet
        self.frames_dropped = 0  # of recordings already closed
        self.failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- state ------------------------------------------------------------------------------------
    def recording(self, room: str, conference: str) -> bool:
        return (room, conference) in self._live

    @property
    def active(self) -> int:
        return len(self._live)

    def frames_dropped_total(self) -> int:
        return self.frames_dropped + sum(r.recorder.frames_dropped
                                         for r in (*self._live.values(), *self._closing))

    # -- start / stop -----------------------------------------------------------------------------
    def start_recording(self, room: str, conference: str, *, announce: bool = True) -> bool:
        """Start recording a conference with someone in it; True when it is
        recording (already was, or now). False: nobody is in it."""
        key = (room, conference)
        if key in self._live:
            return True
        mixer_conference = self._conferences.live(room, conference)
        if mixer_conference is None:
            return False
        self._loop = asyncio.get_running_loop()
        settings = self._config().recording
        path = os.path.join(settings.directory, file_name(room, conference, settings.format))
        recording: Recording | None = None

        def on_end(recorder: Recorder) -> None:  # worker thread
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self._closed, recording)
                except RuntimeError:
                    pass  # the loop closed meanwhile (process exit)

        recorder = Recorder(path, settings.format,
                            file_rate=getattr(mixer_conference, "rate", MIX_RATE), on_end=on_end)
        recording = Recording(room, conference, mixer_conference, recorder)
        self._live[key] = recording
        recorder.start()
        self._media.set_recorder(mixer_conference, recorder)
        log.info("conference %s of room %s: recording started: %s (%s)", conference, room, path, settings.format)
        self._events.publish("recording_started", room=room, conference=conference,
                             file=os.path.basename(path))
        if announce:
            self._announce(mixer_conference, PROMPT_STARTED, recording)
        return True

    def stop_recording(self, room: str, conference: str, *, reason: str = "stopped", announce: bool = True) -> bool:
        """Stop recording (the file is finished in the background); answers
        the new state: False."""
        recording = self._live.pop((room, conference), None)
        if recording is None:
            return False
        self._detach(recording, reason)
        if announce:
            self._announce(recording.mixer_conference, PROMPT_STOPPED, recording)
        return False

    def toggle_recording(self, room: str, conference: str) -> bool:
        """The moderator's ``*7``: start when not recording, else stop; the new state."""
        if self.recording(room, conference):
            return self.stop_recording(room, conference)
        return self.start_recording(room, conference)

    def stop_all(self, reason: str = "server shutdown") -> None:
        for room, conference in list(self._live):
            self.stop_recording(room, conference, reason=reason, announce=False)

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until every stopped recording's file is closed (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r.recorder.finished.is_set() for r in (*self._live.values(), *self._closing)):
                return True
            await asyncio.sleep(0.02)
        pending = [r.recorder.path for r in self._closing if not r.recorder.finished.is_set()]
        if pending:
            log.warning("recordings not finished in %.1f s: %s", timeout, ", ".join(pending))
        return not pending

    # -- ConferenceDirectory hooks ----------------------------------------------------------------
    def joined(self, room: RoomConfig, conference: ConferenceConfig, endpoint, before: int) -> None:
        key = (room.extension, conference.id)
        if before == 0 and conference.auto_record and key not in self._live:
            self.start_recording(room.extension, conference.id, announce=False)
        if key in self._live:
            # the newcomer hears the notice (after its "first participant" prompt, if any)
            recording = self._live[key]
            self._announce_to(endpoint, PROMPT_STARTED, recording)

    def conference_ended(self, room: RoomConfig, conference: ConferenceConfig, mixer_conference) -> None:
        self.stop_recording(room.extension, conference.id, reason="conference ended", announce=False)

    # -- internals --------------------------------------------------------------------------------
    def _detach(self, recording: Recording, reason: str) -> None:
        recording.reason = reason
        if getattr(recording.mixer_conference, "recorder", None) is recording.recorder:
            self._media.set_recorder(recording.mixer_conference, None)
        recording.recorder.stop()
        if not recording.recorder.finished.is_set():
            self._closing.add(recording)
        self._events.publish("recording_stopped", room=recording.room, conference=recording.conference,
                             reason=reason, file=os.path.basename(recording.recorder.path))

    def _closed(self, recording: Recording | None) -> None:
        """The worker closed the file (event loop, from the worker's on_end)."""
        if recording is None:
            return
        recorder = recording.recorder
        self._closing.discard(recording)
        self.frames_dropped += recorder.frames_dropped
        key = (recording.room, recording.conference)
        if recorder.error is not None:
            self.failures += 1
            if self._live.get(key) is recording:
                # failed while recording (disk full, unwritable): stop it; the calls go on
                del self._live[key]
                self._detach(recording, f"failed: {recorder.error}")
                if recording.announced:  # failed before anyone was told: nothing to take back
                    self._announce(recording.mixer_conference, PROMPT_STOPPED, recording)
            return
        log.info("conference %s of room %s: recording stopped (%s): %s, %.1f s, %d frames dropped",
                 recording.conference, recording.room, recording.reason, recorder.path, recorder.duration_s,
                 recorder.frames_dropped)

    def _announce(self, mixer_conference, prompt: str, recording: Recording) -> None:
        for endpoint in mixer_conference.members:
            self._announce_to(endpoint, prompt, recording)

    def _announce_to(self, endpoint, prompt: str, recording: Recording) -> None:
        pcm = self._prompts().get(prompt)
        if pcm is None:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + NOTICE_GIVE_UP_S
        key = (recording.room, recording.conference)

        def play() -> None:
            if getattr(endpoint, "closed", False) or endpoint.conference is not recording.mixer_conference:
                return
            if prompt == PROMPT_STARTED and self._live.get(key) is not recording:
                return  # stopped (or failed) before this participant could be told
            if endpoint.playing:  # never cut a prompt short: wait for its end
                if loop.time() < give_up:
                    loop.call_later(NOTICE_RETRY_S, play)
                return
            endpoint.play(pcm)
            if prompt == PROMPT_STARTED:
                recording.announced = True

        # Not now: a newcomer's own prompt ("first participant") starts right
        # after the join, and this one goes after it.
        loop.call_soon(play)


class RecordingStats:
    """Prometheus collector: recordings active, frames dropped (sum since start)."""

    def __init__(self, recordings: Callable[[], Recordings | None]) -> None:
        self._recordings = recordings

    def collect(self):
        recordings = self._recordings()
        if recordings is None:
            return
        active = GaugeMetricFamily("sipconf_recordings_active", "Conferences being recorded now")
        active.add_metric([], float(recordings.active))
        yield active
        dropped = CounterMetricFamily("sipconf_recording_frames_dropped",
                                      "Mix frames (20 ms) a recording dropped because its writer fell behind")
        dropped.add_metric([], float(recordings.frames_dropped_total()))
        yield dropped
        failed = CounterMetricFamily("sipconf_recording_failures",
                                     "Recordings stopped by a write error (full disk, unwritable directory)")
        failed.add_metric([], float(recordings.failures))
        yield failed
