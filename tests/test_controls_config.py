"""The configuration keys of SPEC 12 (in-conference controls): defaults,
the SPEC 12 example block, and one clear problem per bad value; check-config
on the command line knows them (exit 0 / exit 2)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from sipconf.config import ConfigError, parse_config
from support import REPO

ROOM = """
[[rooms]]
extension = "800"
  [[rooms.conferences]]
  id = "1234"
  pin = "4321"
"""

SPEC12 = """
[server]
talk_threshold_dbfs = -45

[sounds]
leave_beep_hz = 500
leave_beep_ms = 250
announce_count = true

[[rooms]]
extension = "800"
  [[rooms.conferences]]
  id = "1234"
  pin = "4321"
  moderator_pin = "9999"
  wait_for_moderator = false
  end_with_moderator = false
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return info.value.problems


def test_defaults_are_the_spec_12_values():
    config = parse_config(tomllib.loads(ROOM))
    conference = config.rooms[0].conferences[0]
    assert (conference.moderator_pin, conference.wait_for_moderator, conference.end_with_moderator) == \
        (None, False, False)
    s = config.sounds
    assert (s.leave_beep_hz, s.leave_beep_ms, s.announce_count) == (500, 250, True)
    assert config.server.talk_threshold_dbfs == -45.0


def test_spec_12_block_parses():
    config = parse_config(tomllib.loads(SPEC12))
    conference = config.rooms[0].conferences[0]
    assert conference.moderator_pin == "9999"
    assert config.server.talk_threshold_dbfs == -45.0


def test_moderator_options_and_off_switches():
    text = SPEC12.replace("wait_for_moderator = false", "wait_for_moderator = true") \
        .replace("end_with_moderator = false", "end_with_moderator = true") \
        .replace("leave_beep_hz = 500", "leave_beep_hz = 0").replace("announce_count = true", "announce_count = false") \
        .replace("talk_threshold_dbfs = -45", "talk_threshold_dbfs = -52.5")
    config = parse_config(tomllib.loads(text))
    conference = config.rooms[0].conferences[0]
    assert conference.wait_for_moderator and conference.end_with_moderator
    assert config.sounds.leave_beep_hz == 0 and not config.sounds.announce_count
    assert config.server.talk_threshold_dbfs == -52.5


@pytest.mark.parametrize("old, new, needle", [
    ('moderator_pin = "9999"', 'moderator_pin = "4321"', "moderator_pin: must differ from pin"),
    ('moderator_pin = "9999"', 'moderator_pin = "99a9"', "moderator_pin: '99a9' must be digits only"),
    ('moderator_pin = "9999"', "moderator_pin = 9999", "moderator_pin: must be a string"),
    ("wait_for_moderator = false", 'wait_for_moderator = "yes"', "wait_for_moderator: must be true or false"),
    ("end_with_moderator = false", "end_with_moderator = 1", "end_with_moderator: must be true or false"),
    ("leave_beep_hz = 500", "leave_beep_hz = 4000", "[sounds] leave_beep_hz: must be an integer 100-3999"),
    ("leave_beep_hz = 500", "leave_beep_hz = 50", "[sounds] leave_beep_hz"),
    ("leave_beep_ms = 250", "leave_beep_ms = 10", "[sounds] leave_beep_ms"),
    ("announce_count = true", 'announce_count = "true"', "[sounds] announce_count: must be true or false"),
    ("talk_threshold_dbfs = -45", "talk_threshold_dbfs = 3", "[server] talk_threshold_dbfs: must be a number"),
    ("talk_threshold_dbfs = -45", 'talk_threshold_dbfs = "-45"', "[server] talk_threshold_dbfs"),
    ("talk_threshold_dbfs = -45", "talk_threshold_dbfs = -100", "[server] talk_threshold_dbfs"),
])
def test_bad_values_name_table_and_key(old, new, needle):
    found = problems(SPEC12.replace(old, new))
    assert len(found) == 1, found
    assert needle in found[0], found


def test_moderator_options_need_a_moderator_pin():
    text = SPEC12.replace('  moderator_pin = "9999"\n', "").replace("wait_for_moderator = false",
                                                                     "wait_for_moderator = true")
    found = problems(text)
    assert len(found) == 1 and "wait_for_moderator: needs a moderator_pin" in found[0], found


def test_misspelt_key_gets_a_hint():
    found = problems(SPEC12.replace("announce_count", "announce_cont"))
    assert len(found) == 1 and "did you mean 'announce_count'" in found[0], found


def _check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_check_config_command_knows_the_keys(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(SPEC12)
    assert _check_config(good).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(SPEC12.replace("leave_beep_ms = 250", "leave_beep_ms = 5"))
    result = _check_config(bad)
    assert result.returncode == 2
    assert "[sounds] leave_beep_ms" in result.stdout + result.stderr
