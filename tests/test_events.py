import pytest

from sipconf.events import EventBus


def test_publish_reaches_subscribers_with_time_and_drops_none_fields():
    bus = EventBus()
    seen = []
    unsubscribe = bus.subscribe(seen.append)
    bus.publish("joined", room="800", conference="1234", participant="p1", extra=None)
    assert seen[0]["event"] == "joined"
    assert seen[0]["room"] == "800" and seen[0]["participant"] == "p1"
    assert "extra" not in seen[0]
    assert seen[0]["time"].endswith("Z")
    unsubscribe()
    bus.publish("left", room="800")
    assert len(seen) == 1


def test_failing_subscriber_does_not_stop_others():
    bus = EventBus()
    seen = []

    def broken(_event):
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.publish("locked", room="800", conference="1234")
    bus.publish("unlocked", room="800", conference="1234")
    assert [e["event"] for e in seen] == ["locked", "unlocked"]


def test_unknown_event_name_is_refused():
    with pytest.raises(ValueError):
        EventBus().publish("exploded")


def test_talk_events_are_logged_at_debug_and_the_others_at_info(caplog):
    import logging

    from sipconf.controls import log_event

    bus = EventBus()
    bus.subscribe(log_event)
    with caplog.at_level(logging.INFO, logger="sipconf.events"):
        bus.publish("talking", room="800", conference="1234", participant="7")
        bus.publish("stopped_talking", room="800", conference="1234", participant="7")
        bus.publish("joined", room="800", conference="1234", participant="7")
    assert [r.getMessage() for r in caplog.records] == ["event joined room=800 conference=1234 participant=7"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="sipconf.events"):
        bus.publish("talking", room="800", conference="1234", participant="7")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "event talking room=800 conference=1234 participant=7")]
