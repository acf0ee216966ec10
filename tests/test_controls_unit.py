"""sipconf/controls.py without sockets: the conference actions the admin API
will call (state returned, events published), the key timing rules, the
recording hook, and the moderator leaving. The media side is a recording
fake; everything SIP/RTP is proven in test_controls_integration.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sipconf.config import ConferenceConfig, RoomConfig
from sipconf.controls import Controls, ControlsError
from sipconf.events import EventBus


class Endpoint:
    def __init__(self) -> None:
        self.closed = False
        self.muted = False
        self.played: list[int] = []
        self._done = None

    def set_muted(self, muted: bool) -> None:
        self.muted = muted

    def play(self, pcm, on_done=None) -> None:
        self.played.append(len(pcm))
        self._done = on_done

    def stop_playback(self) -> None:
        self._done = None


class Call:
    def __init__(self, n: int) -> None:
        self.call_id = f"call-{n}"
        self.caller = f"10{n}"
        self.endpoint = Endpoint()


class Directory:
    def __init__(self) -> None:
        self.mixed: set = set()
        self.counted: set = set()
        self.beeps: list[bool] = []

    def join(self, room, conference, endpoint, *, mixed=True):
        self.counted.add(endpoint)
        if mixed:
            self.mixed.add(endpoint)

    def mix(self, room, conference, endpoint):
        self.mixed.add(endpoint)

    def unmix(self, room, conference, endpoint, *, beep=True):
        self.mixed.discard(endpoint)
        self.beeps.append(("unmix", beep))

    def leave(self, room, conference, endpoint, *, beep=True):
        self.mixed.discard(endpoint)
        self.counted.discard(endpoint)
        self.beeps.append(("leave", beep))


PROMPTS = {name: np.zeros(100 + i, np.int16) for i, name in enumerate([
    "first_participant", "muted", "unmuted", "locked", "unlocked", "not_allowed", "all_muted", "all_unmuted",
    "participant_removed", "waiting_for_moderator", "goodbye", "invalid", "count_others_0", "count_others_1",
    "count_others_before", "count_others_after", "count_total_1", "count_total_before", "count_total_after"])}
PROMPTS.update({f"number_{n}": np.zeros(1000 + n, np.int16) for n in range(100)})

ROOM = RoomConfig("800", conferences=(ConferenceConfig("1234", "4321", "9999"),
                                       ConferenceConfig("2222", "2000", "2999", wait_for_moderator=True),
                                       ConferenceConfig("3333", "3000", "3999", end_with_moderator=True)))


@pytest.fixture
def setup():
    bus = EventBus()
    seen: list[dict] = []
    bus.subscribe(seen.append)
    hung: list[tuple[str, str]] = []
    now = [0.0]
    directory = Directory()
    controls = Controls(bus, directory, lambda: PROMPTS, lambda call, reason: hung.append((call.call_id, reason)),
                        clock=lambda: now[0])
    return controls, directory, seen, hung, now


def names(seen):
    return [e["event"] for e in seen]


async def test_admin_actions_return_state_and_publish(setup):
    controls, directory, seen, hung, _ = setup
    mod, a, b = Call(1), Call(2), Call(3)
    controls.join(mod, ROOM, ROOM.conferences[0], moderator=True)
    pa = controls.join(a, ROOM, ROOM.conferences[0], moderator=False)
    pb = controls.join(b, ROOM, ROOM.conferences[0], moderator=False)
    conference = controls.conference("800", "1234")
    state = conference.mute(pa.id)
    assert [p["muted"] for p in state["participants"]] == [False, True, False]
    assert a.endpoint.muted and seen[-1]["event"] == "muted" and seen[-1]["participant"] == pa.id
    assert seen[-1]["room"] == "800" and seen[-1]["conference"] == "1234"
    assert not conference.unmute(pa.id)["participants"][1]["muted"]
    assert conference.lock()["locked"] and controls.is_locked(ROOM, ROOM.conferences[0])
    assert not conference.unlock()["locked"]
    state = conference.mute_all()
    assert [p["muted"] for p in state["participants"]] == [False, True, True]  # not the moderator
    assert [p["muted"] for p in conference.unmute_all()["participants"]] == [False, False, False]
    with pytest.raises(KeyError):
        conference.mute("no-such-id")
    state = conference.kick(pb.id)
    assert [p["id"] for p in state["participants"]] == [p.id for p in conference.participants[:2]]
    assert b.endpoint not in directory.mixed  # out of the mix at once; goodbye, then BYE
    b.endpoint._done()
    assert hung == [("call-3", "removed from the conference")]
    controls.leave(b)
    assert names(seen).count("left") == 1
    conference.end()
    for call in (mod, a):
        call.endpoint._done()
    assert {c for c, _ in hung} == {"call-1", "call-2", "call-3"}
    for call in (mod, a):
        controls.leave(call)
    assert controls.conference("800", "1234") is None  # empty: gone, lock and all
    # kicked: out of the mix with the leave beep; ended: no beeps at all
    assert directory.beeps == [("unmix", True), ("leave", False), ("unmix", False), ("unmix", False),
                               ("leave", False), ("leave", False)]
    assert set(names(seen)) <= {"joined", "left", "muted", "unmuted", "locked", "unlocked"}


async def test_keys_need_the_star_within_3_s_and_moderator_keys_refuse_others(setup):
    controls, _, seen, _, now = setup
    mod, a = Call(1), Call(2)
    controls.join(mod, ROOM, ROOM.conferences[0], moderator=True)
    pa = controls.join(a, ROOM, ROOM.conferences[0], moderator=False)
    controls.digit(a, "6")  # no star: nothing
    assert not pa.muted
    controls.digit(a, "*")
    now[0] = 3.5
    controls.digit(a, "6")  # too late
    assert not pa.muted
    controls.digit(a, "*")
    controls.digit(a, "6")
    assert pa.muted and a.endpoint.played[-1] == len(PROMPTS["muted"])
    controls.digit(a, "*")
    controls.digit(a, "5")
    assert a.endpoint.played[-1] == len(PROMPTS["not_allowed"]) and "locked" not in names(seen)
    controls.digit(mod, "*")
    controls.digit(mod, "5")
    assert controls.conference("800", "1234").locked and mod.endpoint.played[-1] == len(PROMPTS["locked"])
    controls.digit(a, "*")
    controls.digit(a, "0")  # "there are 2 participants": before + two + after
    assert a.endpoint.played[-1] == len(PROMPTS["count_total_before"]) + 1002 + len(PROMPTS["count_total_after"])


async def test_recording_hook(setup):
    controls, _, _, _, _ = setup
    mod = Call(1)
    controls.join(mod, ROOM, ROOM.conferences[0], moderator=True)
    conference = controls.conference("800", "1234")
    with pytest.raises(ControlsError):
        conference.set_recording(True)
    controls.digit(mod, "*")
    controls.digit(mod, "7")
    assert mod.endpoint.played[-1] == len(PROMPTS["not_allowed"])
    asked = []
    controls.recorder = lambda conf, on: asked.append(on) or on
    controls.digit(mod, "*")
    controls.digit(mod, "7")
    assert asked == [True] and conference.recording
    assert not conference.set_recording(False)["recording"] and asked == [True, False]


async def test_waiting_then_moderator_then_moderator_leaves(setup):
    controls, directory, _, _, _ = setup
    a, b, mod = Call(1), Call(2), Call(3)
    conf = ROOM.conferences[1]
    pa = controls.join(a, ROOM, conf, moderator=False)
    controls.join(b, ROOM, conf, moderator=False)
    assert pa.waiting and not directory.mixed and a.endpoint.played == [len(PROMPTS["waiting_for_moderator"])]
    a.endpoint._done()  # the prompt ends: the music loops
    assert a.endpoint.played[-1] == len(controls.prompts.music)
    controls.join(mod, ROOM, conf, moderator=True)
    assert directory.mixed == {a.endpoint, b.endpoint, mod.endpoint} and not pa.waiting
    controls.leave(mod)
    assert pa.waiting and directory.mixed == set()
    assert a.endpoint.played[-1] == len(PROMPTS["waiting_for_moderator"])


async def test_end_with_moderator(setup):
    controls, _, _, hung, _ = setup
    mod, a = Call(1), Call(2)
    conf = ROOM.conferences[2]
    controls.join(mod, ROOM, conf, moderator=True)
    controls.join(a, ROOM, conf, moderator=False)
    controls.leave(mod)
    a.endpoint._done()  # goodbye played
    assert hung == [("call-2", "the moderator left")]


async def test_talk_changes_become_events(setup):
    controls, _, seen, _, _ = setup
    a = Call(1)
    pa = controls.join(a, ROOM, ROOM.conferences[0], moderator=False)
    controls.on_talk([(a.endpoint, True), (object(), True)])  # an endpoint in no conference: ignored
    controls.on_talk([(a.endpoint, True)])  # no change: no event
    controls.on_talk([(a.endpoint, False)])
    assert [(e["event"], e["participant"]) for e in seen if "talking" in e["event"]] == \
        [("talking", pa.id), ("stopped_talking", pa.id)]
    assert pa.state()["talking"] is False
    await asyncio.sleep(0)


async def test_joining_a_conference_being_ended_starts_a_new_one(setup):
    controls, _, seen, _, _ = setup
    mod, late = Call(1), Call(2)
    controls.join(mod, ROOM, ROOM.conferences[0], moderator=True)
    old = controls.conference("800", "1234")
    old.lock()
    old.end()  # the moderator still hears goodbye
    controls.join(late, ROOM, ROOM.conferences[0], moderator=False)
    new = controls.conference("800", "1234")
    assert new is not old and not new.locked and [p.call for p in new.participants] == [late]
    controls.leave(mod)  # the old one's last caller gone: the new one stays
    assert controls.conference("800", "1234") is new
