"""HTTP Digest authentication for SIP (RFC 7616, RFC 8760, RFC 3261 section 22).

Server side: :class:`DigestAuthenticator` issues one challenge per configured
algorithm (RFC 8760: strongest first) and verifies ``Authorization`` /
``Proxy-Authorization`` values. Client side: :func:`build_authorization`
answers a challenge (used by the test phone and by trunk registration).

Design choices, and why:

* **Stateless nonces.** A nonce is ``base64url(timestamp_ms | salt | mac)``
  where ``mac = HMAC-SHA256(secret, timestamp_ms | salt | realm)[:16]``.
  The server recognises its own nonces without storing them, so a flood of
  unauthenticated requests costs no memory. A nonce whose MAC does not
  verify (tampered, or issued by an earlier process with another secret) is
  ``BAD``; pass a fixed ``secret`` if nonces must survive a restart.
* **Stale nonces.** A nonce older than ``nonce_lifetime`` whose response is
  otherwise correct gives ``STALE``: the caller re-challenges with
  ``stale=true`` so the client retries silently with the new nonce. Only a
  *correct* response earns ``STALE`` (RFC 7616 3.3), so it reveals nothing.
* **Replay.** With ``qop=auth`` every request carries a nonce count. A
  bounded map remembers the highest ``nc`` seen per nonce; an ``nc`` not
  above it is ``BAD``. Entries leave the map when their nonce expires (an
  expired nonce can only yield ``STALE`` anyway) or, beyond ``max_nonces``
  entries, oldest first. SIP retransmissions never reach :meth:`verify`
  twice: the transaction layer answers them with the stored response.
* **qop=auth is required.** We always offer ``qop="auth"``; a response
  without qop (RFC 2069 / old RFC 3261 style) has no nonce count and so no
  replay protection within the nonce lifetime. Such responses are rejected
  (``BAD``) unless the authenticator is built with ``allow_no_qop=True``.
  :func:`compute_response` still computes them (client side, tests).
* **No enumeration.** Unknown user and wrong password give the same outcome
  (``BAD``), and an unknown user still costs one hash computation.
* **Restarts.** With a random secret, nonces from before a restart are not
  ours: ``BAD`` with reason "nonce not issued by us". Phones that reuse a
  cached nonce would then be refused; build with ``foreign_nonce_stale=True``
  to answer a *correct* response over a foreign nonce with ``STALE`` instead
  (what Asterisk does), or pass a persistent ``secret``.
* Not supported: ``qop=auth-int``, ``userhash=true``, ``username*``
  (RFC 7616 3.4.4). The request-URI is not compared with ``uri`` here; the
  caller may do so.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthResult",
    "DigestAuthenticator",
    "build_authorization",
    "canonical_algorithm",
    "compute_response",
    "parse_credentials",
]

#: Supported challenge algorithms, strongest first (RFC 8760 order of preference).
ALGORITHMS: tuple[str, ...] = ("SHA-512-256", "SHA-256", "MD5")

_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def canonical_algorithm(name: str) -> str:
    """Canonical spelling of a digest algorithm, e.g. ``"sha-256-sess"`` -> ``"SHA-256-sess"``.

    Raises ValueError for an algorithm we do not support.
    """
    text = name.strip().strip('"').strip()
    sess = text.lower().endswith("-sess")
    base = text[: -len("-sess")] if sess else text
    base = base.upper()
    if base not in _HASHLIB_NAMES:
        raise ValueError(f"unsupported digest algorithm {name!r}")
    return base + ("-sess" if sess else "")


def _hasher(algorithm: str) -> Callable[[str], str]:
    base = canonical_algorithm(algorithm).removesuffix("-sess")
    hname = _HASHLIB_NAMES[base]

    def digest(text: str) -> str:
        data = text.encode("utf-8")
        try:
            h = getattr(hashlib, hname)(data)
        except AttributeError:  # hashlib.sha512_256 is missing on some builds
            h = hashlib.new(hname, data)
        return h.hexdigest()

    return digest


class AuthOutcome(enum.Enum):
    OK = "ok"
    #: correct response but the nonce has expired: re-challenge with stale=true
    STALE = "stale"
    #: wrong credentials, unknown user, malformed header, bad or replayed nonce
    BAD = "bad"
    #: no credentials at all (empty header): challenge
    MISSING = "missing"


@dataclass
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None
    #: why, for logs only; never send it to the client
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


# --------------------------------------------------------------------------- parsing

_TOKEN_RE = re.compile(r"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*")


def parse_credentials(value: str) -> dict[str, str]:
    """Parse ``Digest k=v, k="v", ...`` (credentials or a challenge) into a dict.

    Keys are lower-cased; quoted values are unquoted (``\\"`` escapes
    honoured, commas inside quotes kept). Raises ValueError when the scheme
    is not Digest or the parameter list is malformed.
    """
    text = value.strip()
    scheme, _, rest = text.partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest header: {value[:40]!r}")
    params: dict[str, str] = {}
    pos = 0
    n = len(rest)
    while True:
        while pos < n and rest[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            break
        m = _TOKEN_RE.match(rest, pos)
        if not m:
            raise ValueError(f"malformed Digest parameter at {rest[pos:pos + 20]!r}")
        key = m.group(1).lower()
        pos = m.end()
        if pos < n and rest[pos] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= n:
                    raise ValueError("unterminated quoted string in Digest header")
                c = rest[pos]
                if c == "\\" and pos + 1 < n:
                    chars.append(rest[pos + 1])
                    pos += 2
                    continue
                if c == '"':
                    pos += 1
                    break
                chars.append(c)
                pos += 1
            val = "".join(chars)
        else:
            end = pos
            while end < n and rest[end] not in ", \t\r\n":
                end += 1
            val = rest[pos:end]
            pos = end
        # a parameter must be followed by a comma or the end
        while pos < n and rest[pos] in " \t\r\n":
            pos += 1
        if pos < n and rest[pos] != ",":
            raise ValueError(f"malformed Digest header near {rest[pos:pos + 20]!r}")
        if key in params:
            raise ValueError(f"duplicate Digest parameter {key!r}")
        params[key] = val
    return params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- computing


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value of RFC 7616 section 3.4.1 (qop=auth or none).

    ``-sess`` algorithms need ``cnonce``. Without qop this is the RFC 2069 /
    RFC 3261 form ``H(HA1:nonce:HA2)``.
    """
    algo = canonical_algorithm(algorithm)
    h = _hasher(algo)
    ha1 = h(f"{username}:{realm}:{password}")
    if algo.endswith("-sess"):
        if cnonce is None:
            raise ValueError(f"{algo} needs a cnonce")
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    if qop is not None and qop.lower() not in ("auth",):
        raise ValueError(f"unsupported qop {qop!r}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        if nc is None or cnonce is None:
            raise ValueError("qop=auth needs nc and cnonce")
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop.lower()}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def build_authorization(
    challenge: str,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Answer a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (client side).

    Returns the ``Authorization`` header value. Uses qop=auth when offered,
    no qop when the challenge has none; raises ValueError for a challenge we
    cannot answer (not Digest, unknown algorithm, only qop=auth-int).
    """
    params = parse_credentials(challenge)
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None or nonce is None:
        raise ValueError("challenge lacks realm or nonce")
    algorithm = canonical_algorithm(params.get("algorithm", "MD5"))
    qop: str | None = None
    if "qop" in params:
        offered = [q.strip().lower() for q in params["qop"].split(",")]
        if "auth" not in offered:
            raise ValueError(f"challenge offers no usable qop: {params['qop']!r}")
        qop = "auth"
    if cnonce is None and (qop or algorithm.endswith("-sess")):
        cnonce = base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text if qop else None,
        cnonce=cnonce,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={algorithm}",
    ]
    if cnonce is not None and (qop or algorithm.endswith("-sess")):
        parts.append(f"cnonce={_quote(cnonce)}")
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    if qop:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------- server

_SALT_LEN = 8
_MAC_LEN = 16
_NONCE_BYTES = 8 + _SALT_LEN + _MAC_LEN
_NC_RE = re.compile(r"^[0-9a-fA-F]{1,8}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]+$")


class DigestAuthenticator:
    """Challenges and verifies Digest credentials for one realm.

    ``now`` is whatever clock the caller uses consistently (``time.time()``
    or ``time.monotonic()``); nonces carry it with millisecond resolution.
    """

    def __init__(
        self,
        realm: str,
        algorithms: Sequence[str],
        *,
        secret: bytes | None = None,
        nonce_lifetime: float = 300.0,
        max_nonces: int = 10_000,
        allow_no_qop: bool = False,
        foreign_nonce_stale: bool = False,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one digest algorithm is needed")
        algos: list[str] = []
        for a in algorithms:
            c = canonical_algorithm(a)
            if c not in algos:
                algos.append(c)
        if nonce_lifetime <= 0:
            raise ValueError("nonce_lifetime must be positive")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(algos)
        self._secret = secret if secret is not None else os.urandom(32)
        self.nonce_lifetime = float(nonce_lifetime)
        self.max_nonces = max_nonces
        self.allow_no_qop = allow_no_qop
        self.foreign_nonce_stale = foreign_nonce_stale
        # The nonce MAC already authenticates; opaque only has to be echoed, and
        # depends on the realm alone so that it survives a restart.
        self._opaque = hashlib.sha256(b"sipconf-opaque|" + realm.encode("utf-8")).hexdigest()[:32]
        # nonce -> (issued_at, highest nc seen); insertion order = first use
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    # -- nonces

    def _mac(self, stamp_and_salt: bytes) -> bytes:
        msg = stamp_and_salt + b"|" + self.realm.encode("utf-8")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def make_nonce(self, now: float) -> str:
        head = struct.pack(">q", int(round(now * 1000))) + os.urandom(_SALT_LEN)
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii").rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        """Issue time of one of our nonces, or None if it is not ours."""
        if len(nonce) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        head, mac = raw[: 8 + _SALT_LEN], raw[8 + _SALT_LEN :]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        (millis,) = struct.unpack(">q", head[:8])
        return millis / 1000.0

    # -- challenges

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One ``WWW-Authenticate``/``Proxy-Authenticate`` value per algorithm, in order.

        All share one nonce (RFC 8760 allows that), so whichever the client
        picks is checked against the same nonce-count entry.
        """
        nonce = self.make_nonce(now)
        out = []
        for algo in self.algorithms:
            value = (
                f'Digest realm={_quote(self.realm)}, nonce="{nonce}", opaque="{self._opaque}", '
                f'algorithm={algo}, qop="auth"'
            )
            if stale:
                value += ", stale=true"
            out.append(value)
        return out

    # -- verification

    def _forget_expired(self, now: float) -> None:
        seen = self._seen
        # first-use order is close to issue order: sweep from the front
        while seen:
            nonce, (issued, _) = next(iter(seen.items()))
            if now - issued <= self.nonce_lifetime:
                break
            seen.popitem(last=False)
        while len(seen) > self.max_nonces:
            seen.popitem(last=False)

    def verify(
        self,
        header_value: str,
        *,
        method: str,
        password_for: Callable[[str], str | None],
        now: float,
    ) -> AuthResult:
        if header_value is None or not header_value.strip():
            return AuthResult(AuthOutcome.MISSING, reason="no credentials")
        try:
            p = parse_credentials(header_value)
        except ValueError as exc:
            return AuthResult(AuthOutcome.BAD, reason=f"malformed: {exc}")
        username = p.get("username")
        for key in ("username", "realm", "nonce", "uri", "response"):
            if not p.get(key) and not (key == "username" and key in p):
                return AuthResult(AuthOutcome.BAD, username, reason=f"missing {key}")
        assert username is not None
        if p["realm"] != self.realm:
            return AuthResult(AuthOutcome.BAD, username, reason=f"wrong realm {p['realm']!r}")
        try:
            algorithm = canonical_algorithm(p.get("algorithm", "MD5"))
        except ValueError:
            return AuthResult(AuthOutcome.BAD, username, reason=f"unknown algorithm {p.get('algorithm')!r}")
        if algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.BAD, username, reason=f"algorithm {algorithm} not offered")
        if "opaque" in p and not hmac.compare_digest(p["opaque"].encode("utf-8"), self._opaque.encode("ascii")):
            return AuthResult(AuthOutcome.BAD, username, reason="wrong opaque")
        qop = p.get("qop")
        nc_value: int | None = None
        if qop is not None:
            if qop.lower() != "auth":
                return AuthResult(AuthOutcome.BAD, username, reason=f"unsupported qop {qop!r}")
            nc, cnonce = p.get("nc"), p.get("cnonce")
            if not nc or not _NC_RE.match(nc) or not cnonce:
                return AuthResult(AuthOutcome.BAD, username, reason="qop=auth without valid nc/cnonce")
            nc_value = int(nc, 16)
            if nc_value == 0:
                return AuthResult(AuthOutcome.BAD, username, reason="nc is zero")
        elif not self.allow_no_qop:
            return AuthResult(AuthOutcome.BAD, username, reason="response without qop refused")
        elif algorithm.endswith("-sess") and not p.get("cnonce"):
            return AuthResult(AuthOutcome.BAD, username, reason=f"{algorithm} without cnonce")
        response = p["response"]
        if not _HEX_RE.match(response):
            return AuthResult(AuthOutcome.BAD, username, reason="response is not hex")

        nonce = p["nonce"]
        issued = self._nonce_time(nonce)
        if issued is None and not self.foreign_nonce_stale:
            return AuthResult(AuthOutcome.BAD, username, reason="nonce not issued by us")

        password = password_for(username)
        known = password is not None
        expected = compute_response(
            algorithm=algorithm,
            username=username,
            realm=self.realm,
            # unknown users cost the same work as known ones
            password=password if password is not None else "\x00unknown",
            method=method,
            uri=p["uri"],
            nonce=nonce,
            qop="auth" if qop is not None else None,
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
        )
        matches = hmac.compare_digest(expected.encode("ascii"), response.lower().encode("ascii"))
        if not (known and matches):
            return AuthResult(AuthOutcome.BAD, username, reason="wrong password or unknown user")

        if issued is None:
            return AuthResult(AuthOutcome.STALE, username, reason="correct response over a nonce not issued by us")
        age = now - issued
        if age > self.nonce_lifetime:
            return AuthResult(AuthOutcome.STALE, username, reason=f"nonce {age:.0f}s old")
        if age < -self.nonce_lifetime:
            # ours, but from the future: the caller's clock jumped; make the client refetch
            return AuthResult(AuthOutcome.STALE, username, reason="nonce from the future")

        self._forget_expired(now)
        if nc_value is not None:
            previous = self._seen.get(nonce)
            if previous is not None and nc_value <= previous[1]:
                return AuthResult(AuthOutcome.BAD, username, reason=f"replayed nc {nc_value} <= {previous[1]}")
            if previous is None:
                self._seen[nonce] = (issued, nc_value)
                while len(self._seen) > self.max_nonces:
                    self._seen.popitem(last=False)
            else:
                self._seen[nonce] = (previous[0], nc_value)
        return AuthResult(AuthOutcome.OK, username)
