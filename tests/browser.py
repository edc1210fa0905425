"""Shared pieces of the browser tests: Debian's Chromium through Playwright, screenshots, Gradio widgets.

Each browser test file takes the ``page`` fixture (conftest.py) and imports the helpers from here; waits are on
elements, never on network idle (the page keeps connections open).
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def tab(page, label: str) -> None:
    page.get_by_role("tab", name=label).click()


def pick(page, elem_id: str, option: str) -> None:
    """Choose ``option`` in the Gradio dropdown ``#elem_id``."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option).first.click()


def enter(page, selector: str, value) -> None:
    """Type ``value`` into the box at ``selector`` (a number field, a data path) and press Enter."""
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Enter")


def start_run(page, name: str, chart: str = "loss-plot", **numbers) -> None:
    """Set the Train tab's number fields (``max_steps=8`` sets ``#train-max_steps``), name the run, press Start
    and wait until ``#chart`` is this run's: it may still show an earlier run of the process until the next tick."""
    for field, value in numbers.items():
        enter(page, f"#train-{field} input", value)
    page.locator("#run-name textarea, #run-name input").first.fill(name)
    page.locator("#start-btn").click()
    page.wait_for_selector("#train-message :text('Started')")
    page.wait_for_function(f"(document.querySelector('#{chart} .gtitle') || {{}}).textContent?.includes('{name}')")


def ask(page, text: str, panes=("chat-base", "chat-tuned")) -> None:
    """Send ``text`` from the Chat tab and wait until every pane in ``panes`` has a non-empty answer."""
    page.locator("#chat-input textarea").fill(text)
    page.locator("#chat-send").click()
    for pane in panes:
        page.wait_for_function(
            f"[...document.querySelectorAll('#{pane} .bot-row')].some(e => e.innerText.trim().length > 0)",
            timeout=120_000)
