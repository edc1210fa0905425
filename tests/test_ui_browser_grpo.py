"""GRPO in a real browser with the tiny model: the objective picker offers GRPO, two rewards are built by
pointing and clicking (a bad one refused in one line), a short run starts on the shipped arithmetic prompts,
and the reward curves and the latest sampled answers fill while it goes. Screenshots to test-artifacts/browser/.
"""

from __future__ import annotations

import pytest

from tests.browser import enter, pick, shot, tab

pytestmark = pytest.mark.browser

_POINTS = "document.querySelectorAll('#reward-plot .scatterlayer .trace:first-child .point').length"


def _choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in dropdown ``#elem_id`` and wait until the box shows it."""
    pick(page, elem_id, option)
    page.wait_for_function(f"document.querySelector('#{elem_id} input').value.includes({option!r})")


def test_grpo_rewards_built_by_clicking_and_watched_live(studio_url, page):
    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")

    tab(page, "3 · Data")
    _choose(page, "data-path", "arithmetic.jsonl")  # the shipped prompts: {prompt, answer}

    tab(page, "4 · Train")
    page.locator("#train-objective input").first.click()
    offered = page.get_by_role("option").all_inner_texts()
    assert any(o.startswith("GRPO (rewards)") for o in offered), offered
    page.get_by_role("option", name="GRPO (rewards)").first.click()
    page.wait_for_selector("#objective-grpo-num_generations", state="visible")
    enter(page, "#objective-grpo-max_completion_length input[type=number]", 6)
    enter(page, "#train-max_steps input", 3)
    enter(page, "#train-logging_steps input", 1)
    page.locator("#run-name textarea, #run-name input").first.fill("browser-grpo")

    page.get_by_text("Rewards (GRPO)", exact=True).click()  # open the accordion
    page.wait_for_selector("#reward-kind", state="visible")
    # the right number, read from the row's answer column ('match' is the kind shown first)
    _choose(page, "reward-mode", "number")
    page.locator("#reward-add").click()
    page.wait_for_selector("#reward-message :text('added reward 1')")
    # a format regex that does not compile is refused in one line, the list unchanged
    _choose(page, "reward-kind", "follows a format")
    page.wait_for_selector("#reward-pattern", state="visible")
    assert not page.locator("#reward-column").is_visible()  # only the kind's own settings show
    page.locator("#reward-pattern textarea, #reward-pattern input").first.fill(r"(\d+")
    page.locator("#reward-add").click()
    page.wait_for_selector("#reward-message :text('Not added')")
    assert "not a valid regex" in page.locator("#reward-message").inner_text()
    page.locator("#reward-pattern textarea, #reward-pattern input").first.fill(r"^\s*\d+\s*$")
    enter(page, "#reward-weight input[type=number]", 0.5)
    page.locator("#reward-add").click()
    page.wait_for_selector("#reward-message :text('added reward 2')")
    listed = page.locator("#reward-list").inner_text()
    assert "match" in listed and "format" in listed and "number" in listed
    shot(page, "grpo-01-rewards")

    page.locator("#start-btn").click()
    page.wait_for_selector("#train-message :text('Started')")
    page.wait_for_function(
        "(document.querySelector('#reward-plot .gtitle') || {}).textContent?.includes('browser-grpo')")
    page.wait_for_function(f"{_POINTS} >= 2", timeout=120_000)  # the total reward, one point a step
    names = page.locator("#reward-plot .legendtext").all_text_contents()
    assert {"total", "match", "format"} <= set(names), names
    # the table is virtualised: its grid counts the rows (the header and one per answer)
    page.wait_for_function("+document.querySelector('#reward-samples [role=grid]').getAttribute('aria-rowcount') >= 5")
    table = page.locator("#reward-samples").inner_text()
    assert "What is" in table and "match" in table and "format" in table  # prompts, and a score column per reward
    shot(page, "grpo-02-training")
    page.wait_for_selector("#train-progress-label:has-text('done')", timeout=120_000)
    page.wait_for_selector("#train-result :text('Finished')")
    page.wait_for_function(f"{_POINTS} >= 3")
    shot(page, "grpo-03-done")
