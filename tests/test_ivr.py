"""The digit collector on a fake endpoint: prompts, interruption, * and #, timeouts."""

from __future__ import annotations

import asyncio

from sipconf.ivr import DigitCollector, digit_from_info


class FakeEndpoint:
    """Plays a prompt for ``prompt_seconds`` (unless stopped), like the media engine."""

    def __init__(self, prompt_seconds: float = 0.2) -> None:
        self.prompt_seconds = prompt_seconds
        self.played = 0
        self.stopped = 0
        self._handle: asyncio.TimerHandle | None = None

    def play(self, pcm, on_done=None) -> None:
        self.played += 1
        self.stop_playback(count=False)
        if on_done is not None:
            self._handle = asyncio.get_running_loop().call_later(self.prompt_seconds, on_done)

    def stop_playback(self, count: bool = True) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            if count:
                self.stopped += 1


def collector(prompt_seconds=0.2, inter=0.3, first=0.5):
    endpoint = FakeEndpoint(prompt_seconds)
    return endpoint, DigitCollector(endpoint, inter_digit_timeout=inter, first_digit_timeout=first)


async def test_digits_up_to_pound():
    endpoint, digits = collector()
    for d in "1234#":
        digits.feed(d)
    assert await digits.ask("prompt") == "1234"
    assert endpoint.stopped == 1, "digits typed during the prompt interrupt it"


async def test_star_clears_and_type_ahead_is_kept():
    _, digits = collector()
    for d in "9*1234#4321#":
        digits.feed(d)
    assert await digits.ask("id") == "1234"
    assert await digits.ask("pin") == "4321"


async def test_inter_digit_timeout_ends_entry():
    _, digits = collector(prompt_seconds=0.05, inter=0.2)
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, digits.feed, "5")
    loop.call_later(0.15, digits.feed, "6")
    started = loop.time()
    assert await digits.ask("prompt") == "56"
    assert loop.time() - started >= 0.3


async def test_nothing_typed_returns_none_after_prompt_and_first_digit_timeout():
    endpoint, digits = collector(prompt_seconds=0.1, first=0.2)
    assert await digits.ask("prompt") is None
    assert endpoint.stopped == 0, "the prompt played to its end"


async def test_end_notice_of_an_old_prompt_does_not_end_a_new_one():
    endpoint, digits = collector(prompt_seconds=0.1, first=0.15)
    digits.feed("#")
    assert await digits.ask("first") == ""
    # The first prompt was interrupted; the second runs its full length
    # and only then does the first-digit timeout start.
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await digits.ask("second") is None
    assert loop.time() - started >= 0.25


async def test_invalid_digits_are_ignored():
    _, digits = collector()
    for d in "1x2?#":
        digits.feed(d)
    assert await digits.ask("prompt") == "12"


def test_info_bodies():
    assert digit_from_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n") == "5"
    assert digit_from_info("application/dtmf-relay", b"signal= #\r\n") == "#"
    assert digit_from_info("application/dtmf", b"11") == "#"
    assert digit_from_info("application/dtmf", b"10") == "*"
    assert digit_from_info("application/dtmf", b"7") == "7"
    assert digit_from_info("application/dtmf-relay", b"Duration=160") is None
    assert digit_from_info("text/plain", b"Signal=5") is None
