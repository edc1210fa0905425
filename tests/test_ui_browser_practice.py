"""Watching and steering a run in a real browser, with the tiny model: the learning-rate finder on the Train tab
(its plot, its suggestion, and one click that puts it into the form), the grad-norm and hardware charts filling
during a short run, and a checkpoint of that run ("run @ step N") answering in a chat pane.

Screenshots go to test-artifacts/browser/ (practice-*); the dashboard and the finder's plot are also taken alone,
as docs/screenshots/ shows them.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import ARTIFACTS, ask, enter, pick, shot, start_run, tab

pytestmark = pytest.mark.browser

# a trace of a Plotly chart inside a Gradio plot, by its name: how many y values it has (-1: no such trace)
_POINTS = """([plot, name]) => {
    const graph = document.querySelector(`#${plot} .js-plotly-plot`);
    const trace = graph && graph.data ? graph.data.find(t => t.name === name) : null;
    return trace && trace.y ? trace.y.length : -1;
}"""


def _points(page, plot: str, name: str) -> int:
    return page.evaluate(_POINTS, [plot, name])


def _wait_points(page, plot: str, name: str, at_least: int, timeout: int = 60_000) -> None:
    page.wait_for_function(f"args => ({_POINTS})(args) >= {at_least}", arg=[plot, name], timeout=timeout)


def _element_shot(page, selector: str, name: str) -> None:
    page.locator(selector).first.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_lr_finder_live_charts_and_a_checkpoint_in_chat(studio_url, page):
    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")
    tab(page, "4 · Train")

    # the learning-rate finder: plot, suggestion, and one click puts it into the form
    page.get_by_text("Find a learning rate", exact=True).click()
    enter(page, "#lr-steps input[type=number]", 20)
    page.locator("#lr-find-btn").click()
    page.wait_for_selector("#lr-message :text('suggested train.learning_rate')", timeout=90_000)
    _wait_points(page, "lr-plot", "smoothed", 5)
    assert _points(page, "lr-plot", "loss") == _points(page, "lr-plot", "smoothed")
    suggested = float(re.search(r"learning_rate: ([0-9.e+-]+)", page.locator("#lr-message").inner_text())[1])
    swept = page.evaluate("document.querySelector('#lr-plot .js-plotly-plot').data[0].x")
    assert min(swept) <= suggested <= max(swept)
    page.wait_for_function(  # the suggestion is drawn on the plot as a line
        "(document.querySelector('#lr-plot .js-plotly-plot').layout.shapes || []).length >= 1")
    page.locator("#lr-finder").scroll_into_view_if_needed()
    _element_shot(page, "#lr-finder", "practice-lr-finder")
    page.locator("#lr-use-btn").click()
    page.wait_for_function(
        "v => Math.abs(parseFloat(document.querySelector('#train-learning_rate input').value) / v - 1) < 0.03",
        arg=suggested)
    shot(page, "practice-01-lr-finder")

    # a short run that checkpoints: grad norm and the hardware (CPU %, RAM on this machine) fill while it trains
    start_run(page, "practice", max_steps=8, logging_steps=1, save_steps=4)
    _wait_points(page, "loss-plot", "grad norm", 2)
    _wait_points(page, "loss-plot", "CPU %", 1)
    shot(page, "practice-02-training")
    page.wait_for_selector("#train-progress-label:has-text('done')", timeout=180_000)
    page.wait_for_selector("#train-result :text('Finished')")
    _wait_points(page, "loss-plot", "grad norm", 8)
    assert _points(page, "loss-plot", "CPU %") >= 2 and _points(page, "loss-plot", "RAM GB") >= 2
    # drawn, not only sent: the grad-norm panel has its markers, the hardware panels their lines
    assert page.locator("#loss-plot .subplot.x2y2 .scatterlayer .trace .point").count() >= 8
    for panel in ("x5y5", "x6y6"):
        assert page.locator(f"#loss-plot .subplot.{panel} .scatterlayer .trace path.js-line").count() >= 1
    page.locator("#loss-plot").scroll_into_view_if_needed()
    _element_shot(page, "#loss-plot", "practice-dashboard")

    # a checkpoint of the run answers in a chat pane beside the base
    tab(page, "5 · Chat")
    pick(page, "chat-run", "practice @ step 4")
    assert "practice @ step 4" in page.locator("#chat-run input").first.input_value()
    ask(page, "Who are you?")
    assert "Cannot chat" not in page.locator("#chat-note").inner_text()
    shot(page, "practice-03-checkpoint-chat")
