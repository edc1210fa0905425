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


def set_number(page, selector: str, value) -> None:
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Enter")
