"""baresip (Debian baresip-core 1.0) with its g722 and opus modules joins a
room by keypad DTMF and hears a second, wideband participant's 6 kHz tone
(SPEC 10): the server answers in G.722 / Opus and mixes at 16 / 48 kHz."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest

from support import PASSWORDS, ServerProcess, office_config
from test_baresip_interop import BARESIP, Baresip
from wideband_phone import WidebandPhone, band_levels, level_at_rate

pytestmark = pytest.mark.skipif(BARESIP is None, reason="baresip (Debian baresip-core) is not installed")


class WidebandBaresip(Baresip):
    """The interop baresip with only a wideband codec loaded."""

    def __init__(self, directory, server_port: int, user: str, password: str, codec_module: str) -> None:
        super().__init__(directory, server_port, user, password, start=False)
        config = (directory / "config").read_text().replace("module g711.so\n", f"module {codec_module}.so\nmodule sndfile.so\n")
        # sndfile dumps what baresip decodes (aufile 1.0 is a source only)
        config += f"snd_path {directory}\n"
        (directory / "config").write_text(config)
        # baresip 1.0's aufile source wants the codec's own rate and channels
        rate, channels = (16000, 1) if codec_module == "g722" else (48000, 2)
        with wave.open(str(directory / "tone.wav"), "wb") as out:
            out.setnchannels(channels)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(bytes(2 * channels * rate * 60))  # a minute of silence: it listens
        self.start()


def heard(directory) -> tuple[np.ndarray, int]:
    """What baresip decoded: sndfile's dump-<time>-dec.wav."""
    dumps = sorted(directory.glob("dump-*-dec.wav"))
    assert dumps, sorted(p.name for p in directory.iterdir())
    with wave.open(str(dumps[-1]), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return x.reshape(-1, channels)[:, 0], rate


@pytest.mark.parametrize("module,codec", [("g722", "G722"), ("opus", "OPUS")])
def test_baresip_wideband_hears_6_khz(tmp_path, module, codec):
    server = ServerProcess(tmp_path, config_text=office_config(
        server={"language": "en"}, extensions=("101", "102"))).start()
    talker = WidebandPhone(("127.0.0.1", server.sip_port), user="102", password=PASSWORDS["102"], codecs=("G722",))
    softphone = None
    try:
        assert talker.call("800").status == 200
        time.sleep(0.3)
        talker.send_dtmf("1234#4321#")
        softphone = WidebandBaresip(tmp_path, server.sip_port, "101", PASSWORDS["101"], module)
        assert softphone.wait_for(b"200 OK", 10), softphone.output.decode(errors="replace")
        softphone.type("/dial 800\n", gap=0.05)
        assert softphone.wait_for(b"Call established", 10), softphone.output.decode(errors="replace")
        softphone.pump(1.0)
        softphone.type("1234#4321#")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and server.log().count("joined conference 1234 of room 800") < 2:
            softphone.pump(0.2)
        assert server.log().count("joined conference 1234 of room 800") == 2, server.log()[-3000:]
        assert f", {codec}/" in server.log(), server.log()[-2000:]  # "new call ... -> room 800, G722/9"
        softphone.pump(3.0)  # prompts and beeps over
        talker.send_tone(6000.0, amplitude=10000)
        softphone.pump(2.0)
        softphone.close()
        softphone = None
        x, rate = heard(tmp_path)
        assert rate >= 16000, rate
        tail = x[-rate:].astype(np.float64)
        level = level_at_rate(tail, 6000.0, rate)
        assert level > 2000, (level, band_levels(tail, rate, 50, rate / 2))
    finally:
        if softphone is not None:
            softphone.close()
        talker.close()
        server.stop()
