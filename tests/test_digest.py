import base64

import pytest
from hypothesis import given, strategies as st

from sipconf.digest import (
    ALGORITHMS,
    AuthOutcome,
    DigestAuthenticator,
    build_authorization,
    canonical_algorithm,
    compute_response,
    parse_credentials,
)

# RFC 7616 section 3.9.1
RFC = dict(
    username="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    method="GET",
    uri="/dir/index.html",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    qop="auth",
    nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
)

PASSWORDS = {"101": "alice-secret", "102": "bob-secret"}


def password_for(user):
    return PASSWORDS.get(user)


def test_rfc7616_md5_vector():
    assert compute_response(algorithm="MD5", **RFC) == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_vector():
    assert (
        compute_response(algorithm="SHA-256", **RFC)
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_rfc2617_md5_vector():
    # RFC 2617 section 3.5 example (same construction as RFC 7616 MD5)
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2069_style_md5_without_qop():
    # RFC 2069 / RFC 3261 (no qop): H(HA1:nonce:HA2), checked by hand from hashlib
    import hashlib

    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1 = md5("Mufasa:testrealm@host.com:CircleOfLife")
    ha2 = md5("GET:/dir/index.html")
    expected = md5(f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}")
    assert expected == "1949323746fe6a43ef61f9606e7febea"  # RFC 2069 section 2.4 example
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="CircleOfLife",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        )
        == expected
    )


def test_sha512_256_response_is_64_hex_and_differs():
    r = compute_response(algorithm="SHA-512-256", **RFC)
    assert len(r) == 64 and int(r, 16) >= 0
    assert r != compute_response(algorithm="SHA-256", **RFC)


def test_sess_variant():
    import hashlib

    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"{md5('Mufasa:http-auth@example.org:Circle of Life')}:{RFC['nonce']}:{RFC['cnonce']}")
    ha2 = md5("GET:/dir/index.html")
    expected = md5(f"{ha1}:{RFC['nonce']}:00000001:{RFC['cnonce']}:auth:{ha2}")
    assert compute_response(algorithm="MD5-sess", **RFC) == expected


def test_canonical_algorithm():
    assert canonical_algorithm("md5") == "MD5"
    assert canonical_algorithm("sha-512-256") == "SHA-512-256"
    assert canonical_algorithm("SHA-256-SESS") == "SHA-256-sess"
    with pytest.raises(ValueError):
        canonical_algorithm("SHA-1")


def test_parse_credentials_quoted_unquoted_and_commas():
    p = parse_credentials(
        'Digest username="a, b", realm=office.local,nc=00000001 , uri="sip:800@office.local;transport=tcp",'
        ' response="abc", qop=auth, note="say \\"hi\\""'
    )
    assert p == {
        "username": "a, b",
        "realm": "office.local",
        "nc": "00000001",
        "uri": "sip:800@office.local;transport=tcp",
        "response": "abc",
        "qop": "auth",
        "note": 'say "hi"',
    }
    assert parse_credentials("digest   Realm=\"x\"")["realm"] == "x"


@pytest.mark.parametrize(
    "bad",
    ['Basic dXNlcjpwYXNz', 'Digest username="unterminated', 'Digest username', 'Digest a=1 b=2', 'Digest a=1, a=2', ""],
)
def test_parse_credentials_rejects(bad):
    with pytest.raises(ValueError):
        parse_credentials(bad)


@given(st.text(max_size=60))
def test_parse_credentials_never_crashes_otherwise(text):
    try:
        parse_credentials(text)
    except ValueError:
        pass


def _auth(algorithms=("MD5",), **kw):
    return DigestAuthenticator("office.local", algorithms, secret=b"k" * 32, **kw)


def _answer(challenge, user="101", password="alice-secret", method="REGISTER", nc=1):
    return build_authorization(
        challenge, username=user, password=password, method=method, uri="sip:office.local", nc=nc
    )


def test_challenge_format():
    a = _auth(("SHA-256", "md5"))
    ch = a.challenges(1000.0)
    assert len(ch) == 2
    assert ch[0].startswith('Digest realm="office.local", nonce="')
    assert "algorithm=SHA-256" in ch[0] and 'qop="auth"' in ch[0] and 'opaque="' in ch[0]
    assert "algorithm=MD5" in ch[1]
    assert "stale" not in ch[0]
    assert all(c.endswith(", stale=true") for c in a.challenges(1000.0, stale=True))
    p = parse_credentials(ch[0])
    assert p["realm"] == "office.local" and p["qop"] == "auth"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_each_algorithm(algorithm):
    a = _auth((algorithm,))
    (ch,) = a.challenges(1000.0)
    hdr = _answer(ch)
    assert f"algorithm={algorithm}" in hdr
    r = a.verify(hdr, method="REGISTER", password_for=password_for, now=1001.0)
    assert r.outcome is AuthOutcome.OK and r.username == "101"


def test_client_picks_any_offered_algorithm():
    a = _auth(("SHA-512-256", "SHA-256", "MD5"))
    for i in range(3):
        ch = a.challenges(5.0)[i]  # a fresh challenge set each time: they share one nonce
        r = a.verify(_answer(ch), method="REGISTER", password_for=password_for, now=6.0)
        assert r.outcome is AuthOutcome.OK


def test_algorithm_not_offered_is_bad():
    a = _auth(("SHA-256",))
    (ch,) = a.challenges(5.0)
    forged = ch.replace("algorithm=SHA-256", "algorithm=MD5")
    r = a.verify(_answer(forged), method="REGISTER", password_for=password_for, now=6.0)
    assert r.outcome is AuthOutcome.BAD


def test_method_is_part_of_response():
    a = _auth()
    (ch,) = a.challenges(5.0)
    hdr = _answer(ch, method="INVITE")
    assert a.verify(hdr, method="REGISTER", password_for=password_for, now=6.0).outcome is AuthOutcome.BAD
    assert a.verify(hdr, method="INVITE", password_for=password_for, now=6.0).outcome is AuthOutcome.OK


def test_stale_nonce():
    a = _auth(nonce_lifetime=300)
    (ch,) = a.challenges(1000.0)
    hdr = _answer(ch)
    r = a.verify(hdr, method="REGISTER", password_for=password_for, now=1000.0 + 301)
    assert r.outcome is AuthOutcome.STALE and r.username == "101"
    # stale is only given for a correct response
    bad = _answer(ch, password="nope")
    assert a.verify(bad, method="REGISTER", password_for=password_for, now=1301.0).outcome is AuthOutcome.BAD
    # the re-challenge carries stale=true and a fresh nonce that works
    (ch2,) = a.challenges(1301.0, stale=True)
    assert "stale=true" in ch2
    assert a.verify(_answer(ch2), method="REGISTER", password_for=password_for, now=1302.0).outcome is AuthOutcome.OK


def test_replayed_nc_rejected_next_accepted():
    a = _auth()
    (ch,) = a.challenges(10.0)
    first = _answer(ch, nc=1)
    assert a.verify(first, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.OK
    assert a.verify(first, method="REGISTER", password_for=password_for, now=12.0).outcome is AuthOutcome.BAD
    second = _answer(ch, nc=2)
    assert a.verify(second, method="REGISTER", password_for=password_for, now=13.0).outcome is AuthOutcome.OK
    assert a.verify(second, method="REGISTER", password_for=password_for, now=13.5).outcome is AuthOutcome.BAD
    # going backwards is a replay too
    assert a.verify(first, method="REGISTER", password_for=password_for, now=14.0).outcome is AuthOutcome.BAD
    # skipping ahead is fine (lost requests)
    assert a.verify(_answer(ch, nc=7), method="REGISTER", password_for=password_for, now=15.0).outcome is AuthOutcome.OK


def test_replay_map_is_bounded():
    a = _auth(max_nonces=50)
    for i in range(200):
        (ch,) = a.challenges(100.0 + i * 0.001)
        assert a.verify(_answer(ch), method="REGISTER", password_for=password_for, now=100.5).ok
    assert len(a._seen) <= 50


def test_replay_map_forgets_expired():
    a = _auth(nonce_lifetime=10)
    for i in range(20):
        (ch,) = a.challenges(float(i))
        assert a.verify(_answer(ch), method="REGISTER", password_for=password_for, now=float(i)).ok
    (ch,) = a.challenges(1000.0)
    assert a.verify(_answer(ch), method="REGISTER", password_for=password_for, now=1000.0).ok
    assert len(a._seen) == 1


def test_wrong_password_and_unknown_user_look_the_same():
    a = _auth()
    (ch,) = a.challenges(10.0)
    wrong = a.verify(_answer(ch, password="guess"), method="REGISTER", password_for=password_for, now=11.0)
    unknown = a.verify(_answer(ch, user="999", password="guess"), method="REGISTER", password_for=password_for, now=11.0)
    assert wrong.outcome is unknown.outcome is AuthOutcome.BAD


def test_unknown_user_with_stale_nonce_is_bad_not_stale():
    a = _auth(nonce_lifetime=5)
    (ch,) = a.challenges(10.0)
    r = a.verify(_answer(ch, user="999", password="x"), method="REGISTER", password_for=password_for, now=100.0)
    assert r.outcome is AuthOutcome.BAD


def _replace_param(header, key, value):
    p = parse_credentials(header)
    p[key] = value
    return "Digest " + ", ".join(f'{k}="{v}"' for k, v in p.items())


def test_tampered_nonce_is_bad():
    a = _auth()
    (ch,) = a.challenges(10.0)
    nonce = parse_credentials(ch)["nonce"]
    raw = bytearray(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    raw[0] ^= 1  # shift the timestamp: the MAC no longer matches
    forged_nonce = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    forged_ch = ch.replace(nonce, forged_nonce)
    # a correct response computed for the forged nonce is still refused
    r = a.verify(_answer(forged_ch), method="REGISTER", password_for=password_for, now=11.0)
    assert r.outcome is AuthOutcome.BAD
    for junk in ["", "abc", "!!!!", "A" * 200]:
        hdr = _replace_param(_answer(ch.replace(nonce, junk or "x")), "nonce", junk)
        assert a.verify(hdr, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_nonce_from_another_secret_is_bad():
    other = DigestAuthenticator("office.local", ["MD5"], secret=b"z" * 32)
    (ch,) = other.challenges(10.0)
    assert _auth().verify(_answer(ch), method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_foreign_nonce_stale_option():
    other = DigestAuthenticator("office.local", ["MD5"], secret=b"z" * 32)
    (ch,) = other.challenges(10.0)
    a = _auth(foreign_nonce_stale=True)
    assert a.verify(_answer(ch), method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.STALE
    wrong = _answer(ch, password="x")
    assert a.verify(wrong, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_wrong_realm_and_opaque_are_bad():
    a = _auth()
    (ch,) = a.challenges(10.0)
    other_realm = ch.replace('realm="office.local"', 'realm="evil.example"')
    assert a.verify(_answer(other_realm), method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD
    hdr = _replace_param(_answer(ch), "opaque", "0000")
    assert a.verify(hdr, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_missing_and_malformed():
    a = _auth()
    assert a.verify("", method="REGISTER", password_for=password_for, now=1.0).outcome is AuthOutcome.MISSING
    for hdr in ["Basic Zm9vOmJhcg==", 'Digest username="101"', "Digest ,,,", 'Digest username="101", realm="office.local'
                '", nonce="x", uri="sip:a", response="zz", qop=auth, nc=1, cnonce=a']:
        assert a.verify(hdr, method="REGISTER", password_for=password_for, now=1.0).outcome is AuthOutcome.BAD


def test_non_ascii_response_is_bad_not_crash():
    a = _auth()
    (ch,) = a.challenges(10.0)
    hdr = _replace_param(_answer(ch), "response", "é" * 32)
    assert a.verify(hdr, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_no_qop_refused_by_default_accepted_when_allowed():
    for allow, expected in [(False, AuthOutcome.BAD), (True, AuthOutcome.OK)]:
        a = _auth(allow_no_qop=allow)
        (ch,) = a.challenges(10.0)
        no_qop_ch = ch.replace(', qop="auth"', "")
        hdr = _answer(no_qop_ch)
        assert "qop" not in parse_credentials(hdr)
        assert a.verify(hdr, method="REGISTER", password_for=password_for, now=11.0).outcome is expected


def test_qop_auth_int_refused():
    a = _auth()
    (ch,) = a.challenges(10.0)
    hdr = _replace_param(_answer(ch), "qop", "auth-int")
    assert a.verify(hdr, method="REGISTER", password_for=password_for, now=11.0).outcome is AuthOutcome.BAD


def test_build_authorization_fields():
    hdr = build_authorization(
        'Digest realm="office.local", nonce="abc", opaque="op", algorithm=SHA-256, qop="auth,auth-int"',
        username='we"ird',
        password="pw",
        method="INVITE",
        uri="sip:800@office.local",
        nc=26,
        cnonce="cn",
    )
    p = parse_credentials(hdr)
    assert p["username"] == 'we"ird' and p["nc"] == "0000001a" and p["qop"] == "auth"
    assert p["opaque"] == "op" and p["algorithm"] == "SHA-256" and p["cnonce"] == "cn"
    assert p["response"] == compute_response(
        algorithm="SHA-256", username='we"ird', realm="office.local", password="pw", method="INVITE",
        uri="sip:800@office.local", nonce="abc", qop="auth", nc="0000001a", cnonce="cn",
    )


def test_build_authorization_rejects_unusable_challenges():
    with pytest.raises(ValueError):
        build_authorization('Digest realm="r", nonce="n", qop="auth-int"', username="u", password="p", method="M", uri="u")
    with pytest.raises(ValueError):
        build_authorization('Digest realm="r", nonce="n", algorithm=SHA-1', username="u", password="p", method="M", uri="u")
    with pytest.raises(ValueError):
        build_authorization('Digest nonce="n"', username="u", password="p", method="M", uri="u")


def test_authenticator_rejects_bad_setup():
    with pytest.raises(ValueError):
        DigestAuthenticator("r", [])
    with pytest.raises(ValueError):
        DigestAuthenticator("r", ["SHA-1"])
    assert DigestAuthenticator("r", ["md5", "MD5", "sha-256"]).algorithms == ("MD5", "SHA-256")
