import dataclasses
import ipaddress
import pathlib
import tomllib

import pytest

from sipconf.config import (
    DEMO_CONFIG_TOML,
    Config,
    ConfigError,
    ServerConfig,
    demo_config,
    digits_of,
    load_config,
    parse_config,
    parse_port_range,
    with_overrides,
)

# shared/ lies beside the repository (as in CI and the work tree).
SPEC = pathlib.Path(__file__).resolve().parents[2] / "shared" / "SPEC.md"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def one_problem(text: str, *needles: str) -> str:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    for needle in needles:
        assert needle in problems[0], problems
    return problems[0]


ROOM = """
[[rooms]]
extension = "800"
  [[rooms.conferences]]
  id = "1234"
  pin = "4321"
"""


# ----------------------------------------------------------------------------- valid files


def test_demo_config():
    c = demo_config()
    assert c.server == ServerConfig()
    assert c.server.advertised_address == "127.0.0.1"
    assert c.receptionist.numbers == ("+33140000000",) and c.receptionist.extension == "0"
    assert [e.number for e in c.extensions] == ["101", "102"]
    assert c.extensions[0].password == "alice-secret" and c.extensions[0].name == "Alice"
    assert c.trunks[0].name == "provider"
    assert c.trunks[0].allow == (ipaddress.ip_network("127.0.0.2/32"),)
    assert c.trunks[0].register is None
    (room,) = c.rooms
    assert (room.extension, room.name, room.numbers, room.max_participants) == (
        "800", "Salle Everest", ("+33140000800",), 50,
    )
    assert [(x.id, x.pin) for x in room.conferences] == [("1234", "4321"), ("5678", "8765")]
    assert room.conference("5678").pin == "8765" and room.conference("0000") is None
    assert (c.sounds.join_beep_hz, c.sounds.join_beep_ms) == (1000, 250)
    assert (c.security.auth_failures, c.security.pin_failures, c.security.window, c.security.ban) == (5, 10, 600, 900)
    assert c.summary() == (
        "office.local: 2 extensions, 1 room (2 conferences), 1 trunk, receptionist on +33140000000; "
        "SIP 127.0.0.1:5060, RTP 20000-20999"
    )


@pytest.mark.skipif(not SPEC.exists(), reason="shared SPEC.md not present")
def test_demo_toml_is_the_spec_example():
    text = SPEC.read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert DEMO_CONFIG_TOML == example


def test_config_is_frozen():
    c = demo_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.sip_port = 1  # type: ignore[misc]


def test_empty_file_is_valid_with_defaults():
    c = parse_config({})
    assert c == Config()
    assert c.server.sip_port == 5060 and c.server.digest_algorithms == ("MD5",)
    assert c.server.language == "fr" and c.server.rtp_timeout == 30 and c.server.metrics_port == 0
    assert c.extensions == () and c.rooms == () and c.trunks == ()
    assert "no receptionist" in c.summary()


def test_only_rooms_is_valid():
    c = parse_config(tomllib.loads(ROOM))
    assert c.rooms[0].max_participants == 50 and c.rooms[0].name == "" and c.rooms[0].numbers == ()


def test_full_server_table():
    c = parse_config(tomllib.loads("""
[server]
bind = "::1"
advertise = "pbx.example.com"
sip_port = 5070
rtp_ports = " 30000 - 30099 "
domain = "example.com"
language = "EN"
rtp_timeout = 12.5
digest_algorithms = ["sha-512-256", "Sha-256", "md5"]
metrics_port = 9100
"""))
    s = c.server
    assert (s.bind, s.advertised_address, s.sip_port, s.rtp_port_min, s.rtp_port_max) == (
        "::1", "pbx.example.com", 5070, 30000, 30099,
    )
    assert (s.domain, s.language, s.rtp_timeout, s.metrics_port) == ("example.com", "en", 12.5, 9100)
    assert s.digest_algorithms == ("SHA-512-256", "SHA-256", "MD5")
    assert "SIP [::1]:5070, RTP 30000-30099" in c.summary()


def test_trunk_register_table():
    c = parse_config(tomllib.loads("""
[[trunks]]
name = "provider"
allow = ["192.0.2.0/24", "2001:db8::1", "198.51.100.7/24"]
  [trunks.register]
  registrar = "sip:provider.example:5060"
  username = "acct"
  password = "pw"
"""))
    t = c.trunks[0]
    assert t.register.registrar == "sip:provider.example:5060" and t.register.expires == 3600
    assert ipaddress.ip_network("198.51.100.0/24") in t.allow  # strict=False


def test_lookups():
    c = demo_config()
    assert c.extension("101").name == "Alice"
    assert c.extension("+1 01").name == "Alice"
    assert c.extension("800") is None and c.extension("") is None
    assert c.room_for("800") is c.rooms[0]
    assert c.room_for("+33 1 40 00 08 00") is c.rooms[0]
    assert c.room_for("33140000800") is c.rooms[0]
    assert c.room_for("101") is None
    assert c.is_receptionist("0") and c.is_receptionist("+33 1 40 00 00 00")
    assert not c.is_receptionist("800") and not c.is_receptionist("")
    assert c.is_trunk_source("127.0.0.2").name == "provider"
    assert c.is_trunk_source("::ffff:127.0.0.2").name == "provider"
    assert c.is_trunk_source("127.0.0.1") is None
    assert c.is_trunk_source("not an ip") is None
    assert c.is_trunk_source("::1") is None


def test_digits_of():
    assert digits_of("+33 1 40 00 08 00") == "33140000800"
    assert digits_of("") == ""
    assert digits_of("800") == "800"


# ----------------------------------------------------------------------------- failing examples


def test_every_problem_is_reported_not_just_the_first():
    problems = problems_of("""
[server]
sip_port = "abc"
language = "de"
sip_prot = 5061

[[extensions]]
number = "10a"
password = ""
""")
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    assert "[server] sip_port: must be an integer 1-65535, got 'abc'" in problems
    assert "[server] language" in joined and "[server] sip_prot" in joined
    assert "[[extensions]] #1 number" in joined and "[[extensions]] #1 password" in joined


def test_unknown_key_typo_is_caught_with_suggestion():
    p = one_problem("[server]\nsip_prot = 5061\n", "[server] sip_prot", "unknown key")
    assert "sip_port" in p


def test_unknown_table_and_top_level_key():
    problems = problems_of('foo = 1\n[serveur]\nbind = "1.2.3.4"\n[[room]]\nextension = "1"\n')
    joined = "\n".join(problems)
    assert "[serveur]: unknown table" in joined and "'server'" in joined
    assert "[[room]]: unknown table" in joined
    assert "foo: unknown top-level key" in joined


@pytest.mark.parametrize("key", ["receptionist", "extensions", "trunks", "rooms", "sounds", "security"])
def test_unknown_keys_in_every_table(key):
    if key in ("extensions", "trunks"):
        text = {
            "extensions": '[[extensions]]\nnumber = "1"\npassword = "p"\nbogus = 1\n',
            "trunks": '[[trunks]]\nname = "t"\nallow = ["10.0.0.1"]\nbogus = 1\n',
        }[key]
    elif key == "rooms":
        text = ROOM.replace('extension = "800"', 'extension = "800"\nbogus = 1')
    else:
        text = f"[{key}]\nbogus = 1\n"
    one_problem(text, "bogus: unknown key")


def test_unknown_key_in_conference_and_register():
    one_problem(ROOM + "  colour = 'red'\n", "[[rooms.conferences]] #1 colour: unknown key")
    one_problem(
        '[[trunks]]\nname = "t"\n[trunks.register]\nregistrar = "sip:a"\nusername = "u"\npassword = "p"\nport = 1\n',
        "[trunks.register] port: unknown key",
    )


def test_wrong_table_shapes():
    one_problem('server = 5\n', "[server]: must be a table")
    one_problem('[[server]]\nbind = "1.2.3.4"\n', "[server]: must be a single table")
    one_problem('[extensions]\nnumber = "101"\n', "[[extensions]]: must be an array of tables")
    one_problem('rooms = 3\n', "[[rooms]]: must be an array of tables")


@pytest.mark.parametrize(
    "line,needle",
    [
        ("sip_port = 0", "[server] sip_port: must be an integer 1-65535, got 0"),
        ("sip_port = 65536", "got 65536"),
        ("sip_port = true", "got true"),
        ("sip_port = 5060.0", "got 5060.0"),
        ('sip_port = "abc"', "[server] sip_port: must be an integer 1-65535, got 'abc'"),
        ("metrics_port = -1", "[server] metrics_port"),
        ("metrics_port = 65536", "[server] metrics_port"),
        ("metrics_port = false", "[server] metrics_port"),
        ("rtp_timeout = 0", "[server] rtp_timeout"),
        ("rtp_timeout = -5", "[server] rtp_timeout"),
        ("rtp_timeout = true", "[server] rtp_timeout"),
        ("rtp_timeout = inf", "[server] rtp_timeout"),
        ("rtp_timeout = nan", "[server] rtp_timeout"),
        ('rtp_timeout = "30"', "[server] rtp_timeout"),
        ('language = "de"', "[server] language: must be \"fr\" or \"en\", got 'de'"),
        ("language = 1", "[server] language: must be a string"),
        ('bind = "localhost"', "[server] bind: must be an IP address"),
        ('bind = "300.1.1.1"', "[server] bind"),
        ("bind = 127", "[server] bind: must be a string"),
        ('advertise = "not a host!"', "[server] advertise"),
        ('domain = ""', "[server] domain"),
        ('domain = "office local"', "[server] domain"),
        ("digest_algorithms = []", "[server] digest_algorithms: must name at least one"),
        ('digest_algorithms = ["SHA-1"]', "[server] digest_algorithms[0]: must be one of MD5, SHA-256, SHA-512-256"),
        ('digest_algorithms = ["MD5", "md5"]', "[server] digest_algorithms[1]: 'md5' is listed twice"),
        ('digest_algorithms = "MD5"', "[server] digest_algorithms: must be an array of strings"),
        ("digest_algorithms = [5]", "[server] digest_algorithms[0]: must be a string"),
        ('rtp_ports = "20001-20999"', "[server] rtp_ports: the first port must be even"),
        ('rtp_ports = "20000-20000"', "[server] rtp_ports: LO must be below HI"),
        ('rtp_ports = "21000-20000"', "[server] rtp_ports: LO must be below HI"),
        ('rtp_ports = "1000-2000"', "[server] rtp_ports: ports must be within 1024-65535"),
        ('rtp_ports = "60000-70000"', "[server] rtp_ports: ports must be within 1024-65535"),
        ('rtp_ports = "20000"', "[server] rtp_ports: must be \"LO-HI\""),
        ('rtp_ports = "a-b"', "[server] rtp_ports: must be \"LO-HI\""),
        ("rtp_ports = 20000", "[server] rtp_ports: must be a string"),
        ("sip_port = 20002", "[server] sip_port: 20002 falls inside the RTP port range 20000-20999"),
        ("metrics_port = 5060", "[server] metrics_port: 5060 is also the SIP port"),
    ],
)
def test_server_rules(line, needle):
    one_problem(f"[server]\n{line}\n", needle)


def test_server_valid_edge_values():
    c = parse_config(tomllib.loads('[server]\nsip_port = 1\nrtp_ports = "1024-1025"\nmetrics_port = 65535\n'
                                   'advertise = "203.0.113.5"\nbind = "0.0.0.0"\n'))
    assert (c.server.rtp_port_min, c.server.rtp_port_max) == (1024, 1025)
    assert c.server.advertised_address == "203.0.113.5"


@pytest.mark.parametrize(
    "text,needles",
    [
        ('[[extensions]]\npassword = "p"\n', ["[[extensions]] #1 number: is required"]),
        ('[[extensions]]\nnumber = "101"\n', ["[[extensions]] #1 password: is required"]),
        ('[[extensions]]\nnumber = "101"\npassword = ""\n', ["[[extensions]] #1 password: must not be empty"]),
        ('[[extensions]]\nnumber = "+101"\npassword = "p"\n', ["[[extensions]] #1 number: '+101' must be digits only"]),
        ('[[extensions]]\nnumber = "1 01"\npassword = "p"\n', ["number: '1 01' must be digits only"]),
        ('[[extensions]]\nnumber = ""\npassword = "p"\n', ["number: '' must be digits only"]),
        ('[[extensions]]\nnumber = 101\npassword = "p"\n', ['number: must be a string, got 101 (write it quoted: "101")']),
        ('[[extensions]]\nnumber = "101"\npassword = "p"\nname = 3\n', ["[[extensions]] #1 name: must be a string"]),
        ('[[extensions]]\nnumber = "101"\npassword = 1234\n', ["[[extensions]] #1 password: must be a string"]),
    ],
)
def test_extension_rules(text, needles):
    one_problem(text, *needles)


def test_duplicate_extension_names_both_places():
    one_problem(
        '[[extensions]]\nnumber = "101"\npassword = "a"\n[[extensions]]\nnumber = "101"\npassword = "b"\n',
        "[[extensions]] #2 number: '101' is already used by [[extensions]] #1",
    )


def test_numbers_unique_across_the_file_on_digits():
    text = """
[receptionist]
numbers = ["+33 1 40 00 00 00"]
extension = "800"

[[extensions]]
number = "33140000800"
password = "p"

[[rooms]]
extension = "800"
numbers = ["+33140000800", "+33140000000"]
  [[rooms.conferences]]
  id = "1"
  pin = "1"
"""
    problems = problems_of(text)
    joined = "\n".join(problems)
    assert len(problems) == 3, problems
    assert "[[rooms]] #1 (extension 800) extension: '800' is already used by [receptionist] extension" in joined
    assert "[[rooms]] #1 (extension 800) numbers[0]: '+33140000800' is already used by [[extensions]] #1" in joined
    assert "[[rooms]] #1 (extension 800) numbers[1]: '+33140000000' is already used by [receptionist] numbers[0]" in joined


def test_room_numbers_unique_between_rooms_and_within_a_room():
    text = ROOM + ROOM.replace('"800"', '"801"').replace("[[rooms]]", '[[rooms]]\nnumbers = ["801"]')
    one_problem(text, "[[rooms]] #2 (extension 801) numbers[0]: '801' is already used by [[rooms]] #2 (extension 801)")
    one_problem(ROOM + ROOM, "[[rooms]] #2 (extension 800) extension: '800' is already used by [[rooms]] #1 (extension 800)")


@pytest.mark.parametrize(
    "text,needles",
    [
        ('[receptionist]\nnumbers = ["+33-1-40"]\n', ["[receptionist] numbers[0]: '+33-1-40' is not a phone number"]),
        ('[receptionist]\nnumbers = ["33+1"]\n', ["[receptionist] numbers[0]"]),
        ('[receptionist]\nnumbers = [""]\n', ["[receptionist] numbers[0]"]),
        ('[receptionist]\nnumbers = "+33140000000"\n', ["[receptionist] numbers: must be an array of strings"]),
        ('[receptionist]\nnumbers = [33140000000]\n', ["[receptionist] numbers[0]: must be a string"]),
        ('[receptionist]\nextension = "0a"\n', ["[receptionist] extension: '0a' must be digits only"]),
        ("[receptionist]\nextension = 0\n", ["[receptionist] extension: must be a string", 'quoted: "0"']),
    ],
)
def test_receptionist_rules(text, needles):
    one_problem(text, *needles)


def test_receptionist_number_with_spaces_is_fine():
    c = parse_config(tomllib.loads('[receptionist]\nnumbers = [" +33 1 40 00 00 00 "]\n'))
    assert c.receptionist.numbers == ("+33 1 40 00 00 00",)
    assert c.is_receptionist("33140000000")


@pytest.mark.parametrize(
    "text,needles",
    [
        ('[[rooms]]\nname = "x"\n  [[rooms.conferences]]\n  id = "1"\n  pin = "1"\n', ["[[rooms]] #1 extension: is required"]),
        ('[[rooms]]\nextension = "8a"\n  [[rooms.conferences]]\n  id = "1"\n  pin = "1"\n',
         ["[[rooms]] #1 extension: '8a' must be digits only"]),
        ('[[rooms]]\nextension = "800"\n', ["[[rooms]] #1 (extension 800): needs at least one [[rooms.conferences]]"]),
        ('[[rooms]]\nextension = "800"\nconferences = []\n', ["[[rooms]] #1 (extension 800) conferences: needs at least one"]),
        ('[[rooms]]\nextension = "800"\nconferences = 3\n', ["conferences: must be an array of tables"]),
        (ROOM.replace('extension = "800"', 'extension = "800"\nmax_participants = 1'),
         ["[[rooms]] #1 (extension 800) max_participants: must be an integer >= 2, got 1"]),
        (ROOM.replace('extension = "800"', 'extension = "800"\nmax_participants = true'), ["max_participants", "got true"]),
        (ROOM.replace('extension = "800"', 'extension = "800"\nnumbers = ["abc"]'),
         ["[[rooms]] #1 (extension 800) numbers[0]: 'abc' is not a phone number"]),
        (ROOM.replace('id = "1234"', 'id = "56a8"'),
         ["[[rooms]] #1 (extension 800) [[rooms.conferences]] #1 id: '56a8' must be digits only"]),
        (ROOM.replace('id = "1234"', 'id = ""'), ["[[rooms.conferences]] #1 id: '' must be digits only"]),
        (ROOM.replace('pin = "4321"', 'pin = "43 21"'), ["[[rooms.conferences]] #1 pin: '43 21' must be digits only"]),
        (ROOM.replace('pin = "4321"', 'pin = ""'), ["[[rooms.conferences]] #1 pin"]),
        (ROOM.replace('pin = "4321"', ""), ["[[rooms.conferences]] #1 pin: is required"]),
        (ROOM.replace('id = "1234"', "id = 1234"), ["[[rooms.conferences]] #1 id: must be a string"]),
    ],
)
def test_room_rules(text, needles):
    one_problem(text, *needles)


def test_spec_style_conference_id_message():
    text = ROOM + '  [[rooms.conferences]]\n  id = "56a8"\n  pin = "1"\n'
    one_problem(text, "[[rooms]] #1 (extension 800) [[rooms.conferences]] #2 id: '56a8' must be digits only")


def test_conference_ids_unique_within_room_only():
    one_problem(
        ROOM + '  [[rooms.conferences]]\n  id = "1234"\n  pin = "9"\n',
        "[[rooms]] #1 (extension 800) [[rooms.conferences]] #2 id: '1234' is already used by [[rooms.conferences]] #1",
    )
    c = parse_config(tomllib.loads(ROOM + ROOM.replace('"800"', '"801"')))
    assert [r.conferences[0].id for r in c.rooms] == ["1234", "1234"]


@pytest.mark.parametrize(
    "text,needles",
    [
        ('[[trunks]]\nallow = ["10.0.0.1"]\n', ["[[trunks]] #1 name: is required"]),
        ('[[trunks]]\nname = ""\nallow = ["10.0.0.1"]\n', ["[[trunks]] #1 name: must not be empty"]),
        ('[[trunks]]\nname = "p"\n', ["[[trunks]] #1 (p) allow: is required"]),
        ('[[trunks]]\nname = "p"\nallow = ["10.0.0.300"]\n', ["[[trunks]] #1 (p) allow[0]: must be an IP address or CIDR"]),
        ('[[trunks]]\nname = "p"\nallow = ["10.0.0.0/33"]\n', ["allow[0]"]),
        ('[[trunks]]\nname = "p"\nallow = "10.0.0.1"\n', ["allow: must be an array of strings"]),
        ('[[trunks]]\nname = "p"\nallow = ["10.0.0.1"]\n[[trunks]]\nname = "p"\nallow = ["10.0.0.2"]\n',
         ["[[trunks]] #2 (p) name: 'p' is already used by [[trunks]] #1"]),
        ('[[trunks]]\nname = "p"\nregister = 1\n', ["[[trunks]] #1 (p) [trunks.register]: must be a table"]),
        ('[[trunks]]\nname = "p"\n[trunks.register]\nregistrar = "provider.example"\nusername = "u"\npassword = "p"\n',
         ["[[trunks]] #1 (p) [trunks.register] registrar: must be a SIP URI"]),
        ('[[trunks]]\nname = "p"\n[trunks.register]\nregistrar = "sip:a"\npassword = "p"\n',
         ["[trunks.register] username: is required"]),
        ('[[trunks]]\nname = "p"\n[trunks.register]\nregistrar = "sip:a"\nusername = "u"\npassword = "p"\nexpires = 10\n',
         ["[trunks.register] expires: must be an integer 60-86400"]),
    ],
)
def test_trunk_rules(text, needles):
    one_problem(text, *needles)


@pytest.mark.parametrize(
    "line,needle",
    [
        ("join_beep_hz = 99", "[sounds] join_beep_hz"),
        ("join_beep_hz = 4000", "[sounds] join_beep_hz"),
        ("join_beep_hz = 1000.5", "[sounds] join_beep_hz"),
        ("join_beep_ms = 19", "[sounds] join_beep_ms"),
        ("join_beep_ms = 2001", "[sounds] join_beep_ms"),
        ("join_beep_ms = true", "[sounds] join_beep_ms"),
    ],
)
def test_sounds_rules(line, needle):
    one_problem(f"[sounds]\n{line}\n", needle)


@pytest.mark.parametrize(
    "line,needle",
    [
        ("auth_failures = 0", "[security] auth_failures"),
        ("pin_failures = -1", "[security] pin_failures"),
        ("auth_failures = 2.5", "[security] auth_failures"),
        ("pin_failures = true", "[security] pin_failures"),
        ("window = 0", "[security] window"),
        ("ban = -3", "[security] ban"),
        ('ban = "900"', "[security] ban"),
    ],
)
def test_security_rules(line, needle):
    one_problem(f"[security]\n{line}\n", needle)


def test_sounds_and_security_edges_valid():
    c = parse_config(tomllib.loads("[sounds]\njoin_beep_hz = 100\njoin_beep_ms = 2000\n"
                                   "[security]\nauth_failures = 1\npin_failures = 1\nwindow = 0.5\nban = 1\n"))
    assert c.sounds.join_beep_hz == 100 and c.security.window == 0.5 and c.security.ban == 1


# ----------------------------------------------------------------------------- files and flags


def test_load_config(tmp_path):
    path = tmp_path / "sipconf.toml"
    path.write_text(DEMO_CONFIG_TOML)
    assert load_config(path) == demo_config()
    assert load_config(str(path)) == demo_config()


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "no such file" in info.value.problems[0] and "nope.toml" in info.value.problems[0]


def test_load_config_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert "directory" in str(info.value)


def test_load_config_bad_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server\nsip_port = 5060\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "invalid TOML" in info.value.problems[0] and "bad.toml" in info.value.problems[0]


def test_load_config_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[extensions]]\nnumber = "1"\npassword = "\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "latin1.toml" in info.value.problems[0]


def test_load_config_invalid_contents_keeps_every_problem(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nsip_port = 0\nlanguage = 'de'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 2 and info.value.source == str(path)


def test_with_overrides():
    c = with_overrides(demo_config(), bind="0.0.0.0", sip_port=5070, rtp_ports="40000-40099")
    s = c.server
    assert (s.bind, s.sip_port, s.rtp_port_min, s.rtp_port_max) == ("0.0.0.0", 5070, 40000, 40099)
    assert c.rooms == demo_config().rooms
    assert with_overrides(demo_config()) == demo_config()
    assert with_overrides(demo_config(), sip_port="5080").server.sip_port == 5080


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(rtp_ports="20001-20999"), "--rtp-ports: the first port must be even"),
        (dict(rtp_ports="x"), "--rtp-ports"),
        (dict(rtp_ports="100-200"), "--rtp-ports: ports must be within 1024-65535"),
        (dict(sip_port=0), "--sip-port: must be an integer 1-65535"),
        (dict(sip_port=True), "--sip-port"),
        (dict(bind="localhost"), "--bind: must be an IP address"),
        (dict(sip_port=20100), "--sip-port: 20100 falls inside the RTP port range"),
        (dict(rtp_ports="5000-5100"), "--rtp-ports: 5060 falls inside the RTP port range 5000-5100"),
    ],
)
def test_with_overrides_rejects(kwargs, needle):
    with pytest.raises(ConfigError) as info:
        with_overrides(demo_config(), **kwargs)
    assert any(needle in p for p in info.value.problems), info.value.problems


def test_parse_port_range():
    assert parse_port_range("20000-20999", "x") == (20000, 20999)
    assert parse_port_range("1024-1025", "x") == (1024, 1025)
    with pytest.raises(ConfigError) as info:
        parse_port_range("3-1", "--rtp-ports")
    # every problem with the range at once
    assert len(info.value.problems) == 3 and all(p.startswith("--rtp-ports: ") for p in info.value.problems)


def test_config_error_str_lists_problems():
    err = ConfigError(["a", "b"])
    assert str(err) == "a\nb" and err.problems == ["a", "b"]
    assert ConfigError("one").problems == ["one"]


# ----------------------------------------------------------------------------- robustness

from hypothesis import given, settings, strategies as st  # noqa: E402

_scalars = st.one_of(
    st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["800", "+33 1", "1234", "MD5", "20000-20999", "127.0.0.1", "fr", "sip:a"]),
)
_keys = st.sampled_from([
    "server", "receptionist", "extensions", "trunks", "rooms", "sounds", "security", "conferences", "register",
    "bind", "advertise", "sip_port", "rtp_ports", "domain", "language", "rtp_timeout", "digest_algorithms",
    "metrics_port", "numbers", "extension", "number", "password", "name", "allow", "max_participants", "id", "pin",
    "join_beep_hz", "join_beep_ms", "auth_failures", "pin_failures", "window", "ban", "registrar", "username",
    "expires", "bogus",
])
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_parse_config_only_ever_raises_config_error(data):
    try:
        config = parse_config(data)
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)
    else:
        assert isinstance(config, Config)
        config.summary()
