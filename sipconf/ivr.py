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


class DigitCollector:
    def __init__(self, endpoint: PromptSink, *, inter_digit_timeout: float = INTER_DIGIT_TIMEOUT,
                 first_digit_timeout: float = FIRST_DIGIT_TIMEOUT) -> None:
        self.endpoint = endpoint
        self.inter_digit_timeout = inter_digit_timeout
        self.first_digit_timeout = first_digit_timeout
        self._digits: asyncio.Queue[str] = asyncio.Queue()

    def feed(self, digit: str) -> None:
        if digit in VALID_DIGITS:
            self._digits.put_nowait(digit)

    async def say(self, pcm) -> None:
        """Play a prompt to its end (digits typed meanwhile stay queued)."""
        done = asyncio.get_running_loop().create_future()
        self.endpoint.play(pcm, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            if not done.done():
                self.endpoint.stop_playback()

    async def ask(self, pcm) -> str | None:
        """Play ``pcm`` and collect digits up to ``#`` (or the inter-digit timeout).

        ``*`` clears what was typed. Returns the digits without ``#``, or None
        when nothing at all was typed.
        """
        prompt_done = asyncio.Event()
        self.endpoint.play(pcm, prompt_done.set)
        typed = ""
        interrupted = False
        try:
            while True:
                if interrupted or prompt_done.is_set():
                    timeout = self.inter_digit_timeout if typed else self.first_digit_timeout
                    try:
                        digit = await asyncio.wait_for(self._digits.get(), timeout)
                    except asyncio.TimeoutError:
                        return typed or None
                else:
                    digit = await _first_of(self._digits.get(), prompt_done.wait())
                    if digit is None:
                        continue  # the prompt ended: now the timeouts run
                if not interrupted:
                    interrupted = True
                    self.endpoint.stop_playback()
                if digit == "#":
                    return typed
                if digit == "*":
                    typed = ""
                else:
                    typed += digit
        finally:
            if not interrupted and not prompt_done.is_set():
                self.endpoint.stop_playback()


async def _first_of(get_digit, prompt_ended) -> str | None:
    """The next digit, or None if the prompt ends first."""
    digit_task = asyncio.ensure_future(get_digit)
    ended_task = asyncio.ensure_future(prompt_ended)
    try:
        await asyncio.wait({digit_task, ended_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ended_task.cancel()
        if not digit_task.done():
            digit_task.cancel()
    if digit_task.cancelled():
        return None
    # Done (even if it finished at the very moment we cancelled): keep the digit.
    return digit_task.result()


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
