"""DigitCollector.close (issue 15): once the call has ended, its flow stops
at the next prompt or digit even when its task's cancellation was lost
(Python 3.11's asyncio.wait_for drops a cancel that lands as its inner
get() completes, which typed-ahead digits make likely under load)."""

from __future__ import annotations

import asyncio

import pytest

from sipconf.ivr import DigitCollector


class _Endpoint:
    """A prompt sink whose prompts end after ``seconds`` (None: never, as on
    a closed endpoint)."""

    def __init__(self, seconds: float | None = 0.0) -> None:
        self.seconds = seconds
        self.playing = False
        self.stopped = 0

    def play(self, pcm, on_done=None) -> None:
        self.playing = True
        if self.seconds is not None and on_done is not None:
            asyncio.get_running_loop().call_later(self.seconds, on_done)

    def stop_playback(self) -> None:
        self.playing = False
        self.stopped += 1


async def test_typed_ahead_digits_are_not_used_after_close():
    collector = DigitCollector(_Endpoint())
    for digit in "1234#4321#":
        collector.feed(digit)
    assert await collector.ask("id") == "1234"
    collector.close()  # the BYE, while "4321#" waits in the queue
    with pytest.raises(asyncio.CancelledError):
        await collector.ask("pin")


async def test_close_ends_a_question_in_progress_with_digits_queued():
    collector = DigitCollector(_Endpoint(seconds=0.01), first_digit_timeout=5, inter_digit_timeout=5)
    answers: list = []

    async def flow() -> None:
        answers.append(await collector.ask("id"))

    task = asyncio.get_running_loop().create_task(flow())
    await asyncio.sleep(0.05)  # the prompt is over, the question waits for digits
    for digit in "4321":
        collector.feed(digit)
    collector.close()
    collector.feed("#")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert answers == []


async def test_close_ends_a_prompt_that_never_finishes():
    endpoint = _Endpoint(seconds=None)  # a closed endpoint: its prompt never ends
    collector = DigitCollector(endpoint)
    task = asyncio.get_running_loop().create_task(collector.say("goodbye"))
    await asyncio.sleep(0.02)
    assert not task.done()
    collector.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert endpoint.stopped == 1 and not endpoint.playing
    with pytest.raises(asyncio.CancelledError):
        await collector.say("again")  # and every later prompt
