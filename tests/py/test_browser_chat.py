"""The chat page in a real browser: Debian's chromium, headless, driven by Playwright.

Two pages join a room; one types and sends; the other shows the typing notice, the message and the
user list; a hostile username stays text. A screenshot goes to artifacts/. Playwright is pointed at
/usr/bin/chromium and never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.usefixtures("chromium")  # fails, saying how to install it, when missing


def test_two_pages_chat_in_chromium(serve, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import expect, sync_playwright

    server = serve("examples.websocket_chat.app:application")
    url = f"{server.url}/?room=browser"
    dialogs: list[str] = []
    errors: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            pages = []
            for name in (HOSTILE, "bob"):
                page = browser.new_context(viewport={"width": 900, "height": 700}).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                expect(page.locator("#room")).to_have_value("browser")
                page.fill("#username", name)
                page.click("#join-button")
                expect(page.locator("#status")).to_have_text("connected")
                pages.append(page)
            mallory, bob = pages

            # Both pages list both users, the hostile name as plain text.
            for page in pages:
                expect(page.locator("#users .user")).to_have_count(2)
                expect(page.locator("#users .user", has_text=HOSTILE)).to_have_count(1)
                expect(page.locator("#users .user", has_text="bob")).to_have_count(1)

            # Typing on one page shows the notice on the other.
            mallory.locator("#message").press_sequentially("hello <b>bob</b>", delay=20)
            expect(bob.locator("#typing")).to_have_text(f"{HOSTILE} is typing…")
            expect(mallory.locator("#typing")).to_have_text("")

            mallory.click("#send-button")
            message = bob.locator("#messages .message").last
            expect(message.locator(".text")).to_have_text("hello <b>bob</b>")
            expect(message.locator(".username")).to_have_text(HOSTILE)
            expect(bob.locator("#typing")).to_have_text("")
            expect(mallory.locator("#messages .message .text")).to_have_text(["hello <b>bob</b>"])

            bob.fill("#message", "hi there")
            bob.press("#message", "Enter")
            expect(mallory.locator("#messages .message .text").last).to_have_text("hi there")

            ARTIFACTS.mkdir(exist_ok=True)
            bob.screenshot(path=str(ARTIFACTS / "browser_chat.png"), full_page=True)
            mallory.screenshot(path=str(ARTIFACTS / "browser_chat_hostile.png"), full_page=True)

            # Nothing a user typed became markup, and no script of theirs ran.
            for page in pages:
                assert page.locator("img").count() == 0
                assert page.locator("#messages b").count() == 0
                assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
            assert dialogs == []
            assert errors == []

            # A dropped socket reconnects by itself and joins again.
            mallory.evaluate("state.ws.close()")
            expect(bob.locator("#messages .system", has_text=f"{HOSTILE} left")).to_have_count(1)
            expect(mallory.locator("#status")).to_have_text("connected")
            expect(bob.locator("#users .user")).to_have_count(2)
            expect(mallory.locator("#users .user")).to_have_count(2)

            # Closing the tab removes the user from the other page's list.
            mallory.close()
            expect(bob.locator("#users .user")).to_have_count(1)
            expect(bob.locator("#users .user")).to_have_text(["bob"])
            assert dialogs == []
        finally:
            browser.close()


def test_chat_page_under_the_demo_prefix(serve, monkeypatch):
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import expect, sync_playwright

    server = serve("examples.demo.app:app")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(server.url + "/")
            page.click("a[href='/chat/']")
            page.fill("#username", "ann")
            page.fill("#room", "prefixed")
            page.click("#join-button")
            # The page's WebSocket and fetch URLs carry the /chat prefix, or none of this works.
            expect(page.locator("#status")).to_have_text("connected")
            page.fill("#message", "under /chat/")
            page.press("#message", "Enter")
            expect(page.locator("#messages .message .text")).to_have_text(["under /chat/"])
            expect(page.locator("#rooms a", has_text="#prefixed (1)")).to_have_count(1)
            assert page.url == server.url + "/chat/?room=prefixed"
        finally:
            browser.close()
