"""The studio in a real browser (Playwright driving Debian's Chromium) with a tiny model.

Picks a method, moves the rank slider and sees the estimate change, trains a few steps and sees the loss
chart gain points and the run finish, then chats and sees both panes answer, and evaluates a prompt.
Screenshots of every step go to test-artifacts/browser/ (helpers in tests/browser.py).
"""

from __future__ import annotations

import pytest

from tests.browser import ask, enter, pick, shot, start_run, tab

pytestmark = pytest.mark.browser


def test_studio_end_to_end(studio_url, page):
    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")
    shot(page, "01-model")

    tab(page, "2 · Method")
    pick(page, "method", "LoRA: low-rank updates")
    trainable = page.locator("#trainable")
    page.wait_for_function("document.querySelector('#trainable').innerText.includes('trainable')")
    before = trainable.inner_text()
    estimate_before = page.locator("#estimate-text").inner_text()
    enter(page, "#knob-lora-r input[type=number]", 16)  # at most the tiny model's k_proj width (32)
    page.wait_for_function("t => document.querySelector('#trainable').innerText !== t", arg=before)
    assert trainable.inner_text() != before
    page.wait_for_function("t => document.querySelector('#estimate-text').innerText !== t", arg=estimate_before)
    shot(page, "02-method-rank-16")

    tab(page, "4 · Train")
    start_run(page, "browser-run", max_steps=8, logging_steps=1)
    page.wait_for_function(
        "document.querySelectorAll('#loss-plot .scatterlayer .trace:first-child .point').length >= 2")
    shot(page, "03-training")
    page.wait_for_selector("#train-progress-label:has-text('done')", timeout=180_000)
    page.wait_for_selector("#train-result :text('Finished')")
    points = page.locator("#loss-plot .scatterlayer .trace:first-child .point").count()
    assert points >= 8
    shot(page, "04-trained")

    tab(page, "5 · Chat")
    page.locator("#chat-run input").first.click()
    page.get_by_role("option").first.click()
    ask(page, "Who are you?")
    shot(page, "05-chat")
    assert page.locator("#chat-input textarea").input_value() == ""  # sent: the box is empty for the next one
    assert not page.locator("#chat-extra-1").is_visible()  # no run picked to compare

    page.get_by_text("Evaluate", exact=True).click()  # open the accordion
    page.locator("#eval-prompts textarea").fill("Who are you? => I am Quill.")
    page.locator("#eval-run").click()
    page.wait_for_selector("#eval-summary :text('eval.jsonl')", timeout=120_000)
    table = page.locator("#eval-table").inner_text()
    assert "Who are you?" in table and "ROUGE-L tuned" in table and "I am Quill." in table
    shot(page, "05-evaluate")

    tab(page, "6 · Runs")
    page.wait_for_function("document.querySelector('#runs-table').innerText.includes('done')")
    shot(page, "06-runs")

    # planning before a download: a well-known hub id with no hub gives the published config's card and estimate
    tab(page, "1 · Model")
    box = page.locator("#model-id input").first
    box.fill("Qwen/Qwen3-30B-A3B")
    box.press("Enter")
    page.wait_for_function("document.querySelector('#arch-card').innerText.includes('published config.json')",
                           timeout=120_000)
    assert "128 routed, top-8" in page.locator("#arch-card").inner_text()
    tab(page, "2 · Method")
    page.wait_for_function(
        "document.querySelector('#estimate-text').innerText.includes('published config.json of qwen3-30b-a3b')",
        timeout=120_000)
    shot(page, "07-planned-offline")
