"""The admin console in a real headless browser: Debian's chromium driven by
Playwright (no browser download: ``executable_path``). Logs in with the
token, sees participants appear and talk (from the event stream), clicks
mute and checks by FFT that the tone left the mix, clicks kick and sees the
call end with a BYE. A screenshot is kept in the test's tmp_path."""

from __future__ import annotations

import os
import time

import pytest

from admin_support import CONFERENCES, TOKEN, TONES, Admin, admin_config, admin_ports, enter, phone
from support import ServerProcess, wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python not installed")
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium not installed")]
CONF = dict(CONFERENCES)
ANNOUNCEMENT_S = 2.3  # "there is one other participant" is over


@pytest.fixture
def server(tmp_path):
    admin_port, _ = admin_ports()
    s = ServerProcess(tmp_path, config_text=admin_config(admin_port, recordings=tmp_path / "recordings"))
    s.admin_port = admin_port
    s.start()
    yield s
    s.stop()


@pytest.fixture
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            yield page
        finally:
            browser.close()


def test_console_login_live_participants_mute_by_fft_and_kick(server, page, tmp_path):
    admin = Admin(server.admin_port)
    url = f"http://127.0.0.1:{server.admin_port}/"
    page.goto(url)
    page.fill("#token", "not-the-token-at-all")
    page.click("form#login button[type=submit]")
    sync_api.expect(page.locator("#login-error")).to_contain_text("Wrong token")
    page.fill("#token", TOKEN)
    page.click("form#login button[type=submit]")
    sync_api.expect(page.locator("#stream")).to_have_text("events: live", timeout=5000)
    sync_api.expect(page.locator("form#login")).to_be_hidden()
    sync_api.expect(page.locator("section.room[data-room='800'] h2")).to_contain_text("Everest")
    assert page.evaluate("sessionStorage.getItem('sipconf-token')") == TOKEN

    conference = "1010"
    a, b = phone(server, "101"), phone(server, "102")
    try:
        pa = enter(a, admin, conference, CONF[conference])
        # the participant appears without a reload (event stream -> room list)
        row_a = page.locator(f"tr[data-participant='{pa}']")
        sync_api.expect(row_a).to_be_visible(timeout=3000)
        pb = enter(b, admin, conference, CONF[conference])
        row_b = page.locator(f"tr[data-participant='{pb}']")
        sync_api.expect(row_b).to_be_visible(timeout=3000)
        sync_api.expect(row_a).to_contain_text("PCMU/8000")
        time.sleep(ANNOUNCEMENT_S)

        # the talking indicator follows the stream
        sync_api.expect(row_a.locator(".talking.on")).to_have_count(0)
        started = time.monotonic()
        a.send_tone(TONES["101"])
        sync_api.expect(row_a.locator(".talking.on")).to_have_count(1, timeout=3000)
        print(f"talking shown {time.monotonic() - started:.2f} s after the tone started")
        b.send_tone(TONES["102"])
        sync_api.expect(row_b.locator(".talking.on")).to_have_count(1, timeout=3000)
        assert b.wait_for_tone(TONES["101"], 3, seconds=0.5)

        # mute from the console: a's tone leaves the mix
        row_a.locator("button[data-action='mute']").click()
        sync_api.expect(row_a.locator("td.muted")).to_have_text("yes", timeout=3000)
        sync_api.expect(row_a.locator("button[data-action='unmute']")).to_be_visible()
        time.sleep(1.3)  # talk hangover and jitter buffers, then listen for 0.5 s
        assert b.tone_level(TONES["101"], seconds=0.5) < 100, "the muted participant is still heard"
        assert a.hears(TONES["102"], seconds=0.5), "the muted participant no longer hears the others"
        sync_api.expect(row_a.locator(".talking.on")).to_have_count(0, timeout=3000)  # muted: not talking
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

        # kick from the console: b's call ends with a BYE and its row goes
        row_b.locator("button[data-action='kick']").click()
        assert b.wait_for_bye(10), "the kicked participant got no BYE"
        sync_api.expect(row_b).to_have_count(0, timeout=3000)
        sync_api.expect(row_a).to_be_visible()
        assert [p["id"] for p in admin.participants(conference)] == [pa]
    finally:
        a.close()
        b.close()
    assert (tmp_path / "console.png").stat().st_size > 10_000


def test_console_conference_buttons(server, page):
    admin = Admin(server.admin_port)
    page.goto(f"http://127.0.0.1:{server.admin_port}/")
    page.fill("#token", TOKEN)
    page.click("form#login button[type=submit]")
    sync_api.expect(page.locator("#stream")).to_have_text("events: live", timeout=5000)
    conference = "1011"
    a = phone(server, "101")
    try:
        enter(a, admin, conference, CONF[conference])
        box = page.locator(f"section.room[data-room='800'] div.conference[data-conference='{conference}']")
        sync_api.expect(box.locator("tr[data-participant]")).to_have_count(1, timeout=3000)
        box.locator("button[data-action='lock']").click()
        sync_api.expect(box.locator(".badge.locked")).to_be_visible(timeout=3000)
        assert admin.conference(conference)["locked"] is True
        box.locator("button[data-action='unlock']").click()
        sync_api.expect(box.locator(".badge.locked")).to_have_count(0, timeout=3000)
        box.locator("button[data-action='record-start']").click()
        sync_api.expect(box.locator(".badge.recording")).to_be_visible(timeout=3000)
        assert admin.conference(conference)["recording"] is True
        box.locator("button[data-action='record-stop']").click()
        sync_api.expect(box.locator(".badge.recording")).to_have_count(0, timeout=3000)
        assert admin.conference(conference)["recording"] is False
        box.locator("button[data-action='mute-all']").click()
        sync_api.expect(box.locator("td.muted")).to_have_text("yes", timeout=3000)
        box.locator("button[data-action='unmute-all']").click()
        sync_api.expect(box.locator("td.muted")).to_have_text("no", timeout=3000)
        end = box.locator("button[data-action='end']")
        end.click()
        sync_api.expect(end).to_have_text("Click again to end")  # a second click confirms
        assert len(admin.participants(conference)) == 1
        end.click()
        assert a.wait_for_bye(10), "end from the console did not hang up"
        sync_api.expect(box.locator("tr[data-participant]")).to_have_count(0, timeout=3000)
    finally:
        a.close()
    # a wrong token stored from an earlier session sends back to the login form
    page.evaluate("sessionStorage.setItem('sipconf-token', 'stale-token-stale-token')")
    page.reload()
    sync_api.expect(page.locator("form#login")).to_be_visible(timeout=3000)
    assert wait_until(lambda: page.evaluate("sessionStorage.getItem('sipconf-token')") is None, 3)
