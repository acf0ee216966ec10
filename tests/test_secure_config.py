"""``[tls]`` and ``srtp`` in the configuration (SPEC 11): check-config names
the table, the key and the problem, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from secure_phone import make_certificate
from support import REPO

from sipconf.config import ConfigError, parse_config

ROOM = '[[rooms]]\nextension = "800"\n[[rooms.conferences]]\nid = "1"\npin = "2"\n'


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "sipconf.toml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "sipconf", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout + done.stderr


def tls_table(cert, key, port=5061) -> str:
    return f'[tls]\nport = {port}\ncert = "{cert}"\nkey = "{key}"\n'


def test_valid_tls_table_and_policies(tmp_path):
    cert, key = make_certificate(tmp_path)
    text = ROOM + tls_table(cert, key) + (
        '[[extensions]]\nnumber = "101"\npassword = "x"\nsrtp = "required"\n'
        '[[trunks]]\nname = "p"\nallow = ["127.0.0.2/32"]\nsrtp = "off"\n')
    code, out = check(tmp_path, text)
    assert code == 0, out
    assert "TLS 127.0.0.1:5061" in out


@pytest.mark.parametrize("case, needle", [
    ("missing", "[tls] cert: {cert_missing}: no such file"),
    ("not_pem", "[tls] key: {text}: not a PEM file"),
    ("mismatch", "[tls] key: {other_key} does not match the certificate {cert}"),
    ("swapped", "[tls] cert: {key}: PEM file without a certificate"),
])
def test_tls_file_problems_are_named(tmp_path, case, needle):
    cert, key = make_certificate(tmp_path)
    _, other_key = make_certificate(tmp_path, name="other")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello\n")
    names = dict(cert=cert, key=key, other_key=other_key, text=str(text_file),
                 cert_missing=str(tmp_path / "nope.pem"))
    pair = {"missing": (names["cert_missing"], key), "not_pem": (cert, str(text_file)),
            "mismatch": (cert, other_key), "swapped": (key, key)}[case]
    code, out = check(tmp_path, ROOM + tls_table(*pair))
    assert code == 2, out
    assert needle.format(**names) in out, out


def test_encrypted_key_is_refused_not_prompted(tmp_path):
    from cryptography.hazmat.primitives import serialization
    cert, key = make_certificate(tmp_path)
    private = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.BestAvailableEncryption(b"pw")))
    code, out = check(tmp_path, ROOM + tls_table(cert, encrypted))
    assert code == 2 and "[tls] key:" in out and "encrypted" in out, out


def test_tls_table_rules():
    with pytest.raises(ConfigError) as error:
        parse_config({"server": {"sip_port": 5060}, "tls": {"port": 5060, "colour": 1}})
    problems = "\n".join(error.value.problems)
    assert "[tls] port: 5060 is also [server] sip_port" in problems
    assert "[tls] cert: is required" in problems and "[tls] key: is required" in problems
    assert "[tls] colour: unknown key" in problems


def test_srtp_policy_values():
    with pytest.raises(ConfigError) as error:
        parse_config({"extensions": [{"number": "101", "password": "x", "srtp": "always"}],
                      "trunks": [{"name": "p", "allow": ["127.0.0.2/32"], "srtp": True}]})
    problems = "\n".join(error.value.problems)
    assert "[[extensions]] #1 srtp: must be \"optional\", \"required\" or \"off\", got 'always'" in problems
    assert "[[trunks]] #1 (p) srtp: must be a string" in problems
    config = parse_config({"extensions": [{"number": "101", "password": "x", "srtp": "Required"}],
                           "trunks": [{"name": "p", "allow": ["127.0.0.2/32"]}]})
    assert config.extensions[0].srtp == "required" and config.trunks[0].srtp == "optional"
    assert config.tls is None


def test_command_line_port_clashing_with_tls_is_refused(tmp_path):
    from sipconf.config import with_overrides
    cert, key = make_certificate(tmp_path)
    config = parse_config({"tls": {"port": 5061, "cert": cert, "key": key}})
    with pytest.raises(ConfigError, match=r"--sip-port: clashes with \[tls\] port 5061"):
        with_overrides(config, sip_port=5061)
    with pytest.raises(ConfigError, match=r"--rtp-ports: clashes with \[tls\] port 5061"):
        with_overrides(config, rtp_ports="5000-5100")
    assert with_overrides(config, sip_port=5070).server.sip_port == 5070
