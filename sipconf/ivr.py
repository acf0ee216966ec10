"""Digit collection and prompt playing, shared by the room and receptionist flows.

Digits arrive from RFC 4733 events (the media engine) or SIP INFO; both feed
one queue, so type-ahead is kept: a caller who keys ``1234#4321#`` in one go
gets through both questions (the second prompt is cut short by the waiting
digits, as SPEC 6.2 says digits interrupt prompts).
"""

from __future__ import annotations

import asyncio
import re
from typing import Protocol

INTER_DIGIT_TIMEOUT = 5.0
# How long we wait for the first digit once a prompt has finished. SPEC is
# silent; ten seconds is what common IVRs allow before counting a failed try.
FIRST_DIGIT_TIMEOUT = 10.0

VALID_DIGITS = frozenset("0123456789*#ABCD")


class PromptSink(Protocol):
    """What the IVR needs of a media endpoint (mixer.engine.RtpEndpoint fits)."""

    def play(self, pcm, on_done=None) -> None: ...
    def stop_playback(self) -> None: ...


_PROMPT_DONE = "prompt-done"
_DIGIT = "digit"
_CLOSED = "closed"


class DigitCollector:
    """Collects keypad digits; one queue carries both digits and "the prompt
    ended" notices, so waiting needs no extra tasks. Each prompt gets a
    generation number, and the end notice of an older prompt is ignored."""

    def __init__(self, endpoint: PromptSink, *, inter_digit_timeout: float = INTER_DIGIT_TIMEOUT,
                 first_digit_timeout: float = FIRST_DIGIT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.inter_digit_timeout = inter_digit_timeout
        self.first_digit_timeout = first_digit_timeout
        self._events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._generation = 0
        self.closed = False
        self._saying: asyncio.Future | None = None

    def close(self) -> None:
        """The call ended: a prompt or question in progress, and any later
        one, raises CancelledError. The flow's task is cancelled too, but on
        Python 3.11 ``asyncio.wait_for`` loses a cancellation that lands as
        its inner get() completes (a typed-ahead digit was waiting): under
        load the flow of a call hung up went on with its queued digits,
        then waited forever for a prompt on the closed endpoint (issue 15)."""
        if self.closed:
            return
        self.closed = True
        self._events.put_nowait((_CLOSED, None))
        if self._saying is not None and not self._saying.done():
            self._saying.cancel()

    def _check(self) -> None:
        if self.closed:
            raise asyncio.CancelledError("call ended")

    def feed(self, digit: str) -> None:
        if digit in VALID_DIGITS:
            self._events.put_nowait((_DIGIT, digit))

    async def say(self, pcm) -> None:
        """Play a prompt to its end (digits typed meanwhile stay queued)."""
        self._check()
        done = self._saying = asyncio.get_running_loop().create_future()
        self.endpoint.play(pcm, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            self._saying = None
            if not done.done() or done.cancelled():
                self.endpoint.stop_playback()
        self._check()

    async def ask(self, pcm) -> str | None:
        """Play ``pcm`` and collect digits up to ``#`` (or the inter-digit timeout).

        ``*`` clears what was typed. Returns the digits without ``#``, or None
        when nothing at all was typed.
        """
        self._check()
        self._generation += 1
        generation = self._generation
        self.endpoint.play(pcm, lambda: self._events.put_nowait((_PROMPT_DONE, generation)))
        prompt_running = True
        typed = ""
        try:
            while True:
                if prompt_running:
                    timeout = None
                else:
                    timeout = self.inter_digit_timeout if typed else self.first_digit_timeout
                try:
                    kind, value = await asyncio.wait_for(self._events.get(), timeout)
                except asyncio.TimeoutError:
                    self._check()
                    return typed or None
                self._check()  # the call ended (woken by _CLOSED, or a digit queued before it)
                if kind == _PROMPT_DONE:
                    if value == generation:
                        prompt_running = False
                    continue
                if prompt_running:  # digits typed during a prompt interrupt it
                    prompt_running = False
                    self.endpoint.stop_playback()
                if value == "#":
                    return typed
                if value == "*":
                    typed = ""
                else:
                    typed += str(value)
        finally:
            if prompt_running:
                self.endpoint.stop_playback()


_DTMF_RELAY_SIGNAL = re.compile(r"^\s*signal\s*=\s*(\S)", re.IGNORECASE | re.MULTILINE)


def digit_from_info(content_type: str | None, body: bytes) -> str | None:
    """The digit a SIP INFO carries (application/dtmf-relay or application/dtmf)."""
    if not content_type:
        return None
    text = body.decode("ascii", "replace")
    if content_type == "application/dtmf-relay":
        match = _DTMF_RELAY_SIGNAL.search(text)
        digit = match.group(1) if match else None
    elif content_type == "application/dtmf":
        digit = text.strip()[:2]
        if digit == "10":
            digit = "*"
        elif digit == "11":
            digit = "#"
        else:
            digit = digit[:1]
    else:
        return None
    if digit is None:
        return None
    digit = digit.upper()
    return digit if digit in VALID_DIGITS else None
