"""The channels chat page in a real browser: Debian's chromium, headless, driven by Playwright.

Two pages join one room through hornbeam.js; each sees the other in the user list; one types
(the other sees the indicator) and sends; the other gets the message, and a hostile username and
message stay text. A page that joins later gets the history. When a page closes, the other shows
it leaving. Screenshots go to artifacts/. Playwright is pointed at /usr/bin/chromium and never
downloads a browser.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOSTILE = "<img src=x onerror=alert(1)>"
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.usefixtures("chromium")  # fails, saying how to install it, when missing


def test_two_pages_chat_with_presence(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import expect, sync_playwright

    server = serve("examples.channels_chat.app:app")
    room = f"browser{uuid.uuid4().hex[:8]}"
    errors: list[str] = []
    dialogs: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            def open_page(name: str) -> Any:
                page = browser.new_context(viewport={"width": 900, "height": 800}).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(f"{server.url}/")
                page.fill("#username", name)
                page.fill("#room", room)
                page.click("#join-btn")
                expect(page.locator("#status")).to_have_text("Connected")
                expect(page.locator("#chat-area")).to_be_visible()
                return page

            mallory = open_page(HOSTILE)
            bob = open_page("bob")

            for page in (mallory, bob):
                expect(page.locator("#users .user")).to_have_count(2)
                expect(page.locator("#users .user", has_text=HOSTILE)).to_have_count(1)
                expect(page.locator("#users .user", has_text="bob")).to_have_count(1)
            expect(mallory.locator(".message.system", has_text="bob joined")).to_have_count(1)

            mallory.locator("#message-input").press_sequentially("hi <b>bob</b>", delay=20)
            expect(bob.locator("#typing-indicator")).to_have_text(f"{HOSTILE} is typing…")
            mallory.locator("#message-input").press("Enter")
            expect(bob.locator(".message", has_text="hi <b>bob</b>")).to_have_count(1)
            expect(mallory.locator(".message", has_text="hi <b>bob</b>")).to_have_count(1)
            expect(bob.locator("#typing-indicator")).to_have_text("")
            # Nothing the users typed became markup.
            assert bob.locator("#messages b, #messages img, #users img").count() == 0

            bob.fill("#message-input", "hello back")
            bob.click("#send-btn")
            expect(mallory.locator(".message", has_text="hello back")).to_have_count(1)

            # A late joiner gets the room's history from the store.
            carol = open_page("carol")
            expect(carol.locator(".message.history")).to_have_count(2)
            expect(carol.locator(".message.history").first).to_contain_text("hi <b>bob</b>")
            expect(bob.locator("#users .user")).to_have_count(3)

            ARTIFACTS.mkdir(exist_ok=True)
            bob.screenshot(path=str(ARTIFACTS / "channels_chat_bob.png"))

            # Closing a page (no leave sent) removes its user everywhere.
            mallory.context.close()
            for page in (bob, carol):
                expect(page.locator("#users .user")).to_have_count(2)
                expect(page.locator(".message.system", has_text=f"{HOSTILE} left")).to_have_count(1)
            carol.click("#leave-btn")
            expect(bob.locator("#users .user")).to_have_count(1)
            expect(bob.locator(".message.system", has_text="carol left")).to_have_count(1)
            bob.screenshot(path=str(ARTIFACTS / "channels_chat_after_leave.png"))
        finally:
            browser.close()

    assert errors == [], errors
    assert dialogs == [], dialogs
