"""The configuration of recording and call records (SPEC 13): ``[recording]``,
``[[rooms.conferences]] auto_record``, ``[server] cdr_file``; check-config
exits 2 naming the table and key."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from sipconf.config import ConfigError, RecordingConfig, parse_config
from support import REPO

ROOM = """
[[rooms]]
extension = "800"
  [[rooms.conferences]]
  id = "1234"
  pin = "4321"
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return info.value.problems


def test_defaults():
    config = parse_config(tomllib.loads(ROOM))
    assert config.recording == RecordingConfig("recordings", "ogg")
    assert config.server.cdr_file == ""
    assert config.rooms[0].conferences[0].auto_record is False


def test_values(tmp_path):
    text = ROOM + '  auto_record = true\n' + f'''
[recording]
directory = "{tmp_path / 'rec'}"
format = "FLAC"
'''
    text = f'[server]\ncdr_file = "{tmp_path / "cdr.jsonl"}"\n' + text
    config = parse_config(tomllib.loads(text))
    assert config.recording.directory == str(tmp_path / "rec")
    assert config.recording.format == "flac"
    assert config.rooms[0].conferences[0].auto_record is True
    assert config.server.cdr_file == str(tmp_path / "cdr.jsonl")


@pytest.mark.parametrize("text, needle", [
    ('[recording]\nformat = "mp3"\n', "[recording] format: must be one of 'ogg', 'flac', 'wav', got 'mp3'"),
    ('[recording]\nformat = 3\n', "[recording] format: must be a string"),
    ('[recording]\ndirectory = ""\n', "[recording] directory: must not be empty"),
    ('[recording]\ndirectry = "x"\n', "[recording] directry: unknown key (did you mean 'directory'?)"),
    ('[server]\ncdr_file = 1\n', "[server] cdr_file: must be a string"),
    ('[server]\ncdr_file = "/tmp"\n', "[server] cdr_file: '/tmp' is a directory"),
])
def test_bad_values_name_table_and_key(text, needle):
    problems = problems_of(ROOM + "\n" + text if text.startswith("[recording]") else text + ROOM)
    assert any(needle in p for p in problems), problems


def test_auto_record_must_be_a_boolean():
    problems = problems_of(ROOM + '  auto_record = "yes"\n')
    assert problems == ["[[rooms]] #1 (extension 800) [[rooms.conferences]] #1 auto_record: must be true or false, "
                        "got 'yes'"]


def test_recording_directory_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    problems = problems_of(ROOM + f'\n[recording]\ndirectory = "{blocker}"\n')
    assert any("[recording] directory:" in p and "is not a directory" in p for p in problems), problems


def test_check_config_exits_2_on_a_bad_format(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(ROOM + '\n[recording]\nformat = "mp3"\n')
    result = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "[recording] format" in result.stderr
    path.write_text(ROOM + '  auto_record = true\n\n[recording]\nformat = "wav"\n')
    result = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
