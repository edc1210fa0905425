"""Take the README's screenshots of every tab with the embedded model (a short quickstart run included).

    PYTHONPATH=. .venv/bin/python docs/screenshots/make_screenshots.py    # needs /usr/bin/chromium

Trains 8 steps of the quickstart on the CPU (a minute or two) into a temporary runs folder.
"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


# Filling a field lower down scrolls the page, and not always the window: every scrolled box goes back up,
# and the focused field lets go so its scroll-into-view does not run again.
_TO_TOP = ("() => { document.activeElement?.blur(); window.scrollTo(0, 0);"
           " for (const e of document.querySelectorAll('*')) if (e.scrollTop) e.scrollTop = 0; }")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _number(page, selector: str, value) -> None:
    box = page.locator(selector).first
    box.fill(str(value))
    box.press("Enter")


def _shoot(page, name: str) -> None:
    page.wait_for_timeout(1200)  # let plotly finish its transition
    page.evaluate(_TO_TOP)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
    print(OUT / f"{name}.png")


def take(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(300_000)
        page.goto(url)
        page.wait_for_selector("#arch-card table")
        _shoot(page, "model")
        page.get_by_role("tab", name="2 · Method").click()
        _number(page, "#knob-lora-r input[type=number]", 16)
        page.locator("#knob-lora-targets label:has-text('attention')").click()  # the default, off: all-linear has it
        page.locator("#knob-lora-targets label:has-text('all-linear')").click()
        _number(page, "#train-max_seq_len input", 256)
        page.wait_for_function("document.querySelector('#estimate-text').innerText.includes('GB')")
        _shoot(page, "method")
        page.get_by_role("tab", name="3 · Data").click()
        page.locator("#data-preview-btn").click()
        page.wait_for_selector("#data-preview .trained")
        _shoot(page, "data")
        page.get_by_role("tab", name="4 · Train").click()
        _number(page, "#train-max_steps input", 8)
        _number(page, "#train-learning_rate input", 0.001)
        page.locator("#start-btn").click()
        page.wait_for_function("/Finished|failed/.test(document.querySelector('#train-result').innerText)",
                               timeout=540_000)
        _shoot(page, "train")
        page.get_by_role("tab", name="5 · Chat").click()
        page.locator("#chat-run input").first.click()
        page.get_by_role("option").first.click()
        page.locator("#chat-input textarea").fill("Who are you?")
        page.locator("#chat-send").click()
        page.wait_for_function("[...document.querySelectorAll('#chat-tuned .bot-row')]"
                               ".some(e => e.innerText.trim().length > 20)")
        page.wait_for_timeout(15_000)
        _shoot(page, "chat")
        page.get_by_role("tab", name="6 · Runs").click()
        page.locator("#runs-compare input").first.click()
        page.get_by_role("option").first.click()
        page.locator("#runs-pick input").first.click()
        page.get_by_role("option").first.click()
        page.wait_for_selector("#runs-command :text('python -m studio train')")
        _shoot(page, "runs")
        browser.close()


def main() -> int:
    from studio.ui import launch

    port = _port()
    with tempfile.TemporaryDirectory() as runs:
        demo = launch.main(["--port", str(port), "--runs", runs], prevent_thread_lock=True)
        try:
            take(f"http://127.0.0.1:{port}/")
        finally:
            from studio import training

            job = training.current_job()
            if job is not None:  # never leave a run writing into a folder about to be removed
                job.stop()
                job.wait()
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
