"""Browser tests of the Zenith and Velithon chat pages: two headless Chromium pages chat through a
real uvicorn, with the apps mounted under a path prefix (as `make run` mounts them), and a hostile
username and message show up as text, never as markup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_TEXT = "<img src=x onerror=\"window.__xss=1\"><b>bold?</b><script>window.__xss=2</script>"


def zenith_mounted() -> Any:
    """uvicorn --factory target: Zenith under /zenith."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from examples.zenith_chat.app import app

    return Starlette(routes=[Mount("/zenith", app=app)])


def velithon_mounted() -> Any:
    """uvicorn --factory target: Velithon under /velithon."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from examples.velithon_chat.app import app

    return Starlette(routes=[Mount("/velithon", app=app)])


@pytest.fixture
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, dialogs: list[str]) -> Any:
    page = browser.new_context().new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return page


def assert_no_injection(page: Any, dialogs: list[str]) -> None:
    assert dialogs == []
    assert page.evaluate("window.__xss") is None
    assert page.locator("#messages img, #messages b, #messages script, img").count() == 0


def test_zenith_two_pages_chat_and_hostile_text_stays_text(serve, browser):
    from playwright.sync_api import expect

    server = serve("tests.py.test_browser_zenith_velithon:zenith_mounted", args=("--factory",))
    dialogs: list[str] = []
    evil, bob = new_page(browser, dialogs), new_page(browser, dialogs)
    for page, name in ((evil, HOSTILE_NAME), (bob, "bob")):
        page.goto(server.url + "/zenith/")
        page.fill("#usernameInput", name)
        page.fill("#roomInput", "general")
        page.click("#joinBtn")
        expect(page.locator("#messages")).to_contain_text("Connected to room: general")
        expect(page.locator("#users")).to_contain_text(name)

    expect(bob.locator("#users")).to_contain_text(HOSTILE_NAME)
    expect(evil.locator("#users li")).to_have_count(2)
    expect(evil.locator("#messages")).to_contain_text("bob joined the room")

    bob.locator("#messageInput").press_sequentially("hi")
    expect(evil.locator("#typing")).to_have_text("bob is typing…")
    bob.press("#messageInput", "Enter")
    expect(evil.locator("#messages")).to_contain_text("bob: hi")
    expect(evil.locator("#typing")).to_have_text("")

    evil.fill("#messageInput", HOSTILE_TEXT)
    evil.click("#sendBtn")
    expect(bob.locator("#messages")).to_contain_text(f"{HOSTILE_NAME}: {HOSTILE_TEXT}")
    expect(evil.locator("#messages")).to_contain_text(f"{HOSTILE_NAME}: {HOSTILE_TEXT}")

    ARTIFACTS.mkdir(exist_ok=True)
    bob.screenshot(path=str(ARTIFACTS / "zenith-chat-bob.png"), full_page=True)
    evil.screenshot(path=str(ARTIFACTS / "zenith-chat-hostile.png"), full_page=True)
    for page in (evil, bob):
        assert_no_injection(page, dialogs)

    evil.close()
    expect(bob.locator("#messages")).to_contain_text(f"{HOSTILE_NAME} left the room")
    expect(bob.locator("#users li")).to_have_count(1)


def test_velithon_two_pages_chat_and_hostile_text_stays_text(serve, browser, tmp_path):
    from playwright.sync_api import expect

    server = serve("tests.py.test_browser_zenith_velithon:velithon_mounted", args=("--factory",),
                   env={"VELITHON_HISTORY_FILE": str(tmp_path / "history.jsonl")})
    dialogs: list[str] = []
    evil, bob = new_page(browser, dialogs), new_page(browser, dialogs)
    for page, name in ((evil, HOSTILE_NAME), (bob, "bob")):
        page.goto(server.url + "/velithon/")
        # The page connects as Anonymous on load (as the seed's did); then as our user.
        expect(page.locator("#messages")).to_contain_text("Connected to chat")
        page.fill("#username-input", name)
        page.fill("#room-input", "general")
        page.click("#connect-button")
        page.wait_for_function(
            "name => ws !== null && ws.readyState === WebSocket.OPEN && currentUsername === name", arg=name)

    expect(bob.locator("#users-list")).to_have_text(f"({HOSTILE_NAME}, bob)")
    expect(bob.locator("#users-count")).to_have_text("2")

    bob.fill("#message-input", "hello")
    bob.press("#message-input", "Enter")
    expect(evil.locator("#messages")).to_contain_text("bob: hello")

    evil.fill("#message-input", HOSTILE_TEXT)
    evil.click("#send-button")
    expect(bob.locator("#messages")).to_contain_text(f"{HOSTILE_NAME}: {HOSTILE_TEXT}")

    bob.fill("#to-input", HOSTILE_NAME)
    bob.fill("#message-input", "just for you")
    bob.click("#send-button")
    expect(evil.locator("#messages")).to_contain_text(f"[private] bob → {HOSTILE_NAME}: just for you")
    expect(bob.locator("#messages")).to_contain_text(f"[private] bob → {HOSTILE_NAME}: just for you")

    # A third page sees the history, including the hostile message, as text.
    late = new_page(browser, dialogs)
    late.goto(server.url + "/velithon/")
    expect(late.locator("#messages")).to_contain_text(f"{HOSTILE_NAME}: {HOSTILE_TEXT}")
    expect(late.locator("#messages")).not_to_contain_text("just for you")

    ARTIFACTS.mkdir(exist_ok=True)
    bob.screenshot(path=str(ARTIFACTS / "velithon-chat-bob.png"), full_page=True)
    evil.screenshot(path=str(ARTIFACTS / "velithon-chat-hostile.png"), full_page=True)
    for page in (evil, bob, late):
        assert_no_injection(page, dialogs)

    evil.close()
    expect(bob.locator("#messages")).to_contain_text(f"{HOSTILE_NAME} left the chat")
