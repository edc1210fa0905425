"""A preference run in a real browser with the tiny model: the Data tab shows a pair side by side, a short DPO
run started from a finished SFT run streams the reward margin on the Train tab's chart, and the Chat tab
answers in three panes: base, the DPO run and the SFT run it started from.

Screenshots go to test-artifacts/browser/pref-*.png (helpers in tests/browser.py).
"""

from __future__ import annotations

import json

import pytest

from studio import validation
from tests.browser import enter, pick, shot, start_run, tab
from tests.test_training import run_job

pytestmark = pytest.mark.browser

PAIRS = [{"prompt": f"q{i}?", "chosen": "In short: yes.", "rejected": f"Well, what a question {i}! no."}
         for i in range(8)]


@pytest.fixture
def sft_run(tiny_dirs, tmp_path):
    """A finished 3-step SFT run in the studio's runs folder (the studio_url fixture serves tmp_path/runs)."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                                       {"role": "assistant", "content": r["chosen"]}]})
                              for r in PAIRS))
    cfg = validation.from_dict({
        "model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
        "data": {"path": str(chat)},
        "train": {"max_steps": 3, "micro_batch_size": 4, "max_seq_len": 64, "precision": "fp32",
                  "output_dir": str(tmp_path / "runs"), "run_name": "sft-start"}})
    job = run_job(cfg)
    assert job.state == "done", job.snapshot()["message"]
    return job.run_dir


def _option(page, elem_id: str, name: str) -> None:
    """Type ``name`` into the dropdown ``#elem_id`` (its list filters to it) and click the option named exactly
    that (runs have checkpoint rows; an unfiltered list may re-render under the click)."""
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(name)
    page.get_by_role("option", name=name, exact=True).first.click()


def test_preference_run_pair_margin_and_three_panes(sft_run, studio_url, page, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in PAIRS))
    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")

    tab(page, "3 · Data")
    enter(page, "#data-path input", pairs)
    page.locator("#data-preview-btn").click()
    page.wait_for_selector("#data-preview .pair mark.chosen")
    first = page.locator("#data-preview .pair").first
    assert "q0?" in first.locator(".prompt").inner_text()
    assert first.locator("mark.chosen").inner_text() == "In short: yes."
    assert first.locator("mark.rejected").inner_text() == "Well, what a question 0! no."
    assert "preference" in page.locator("#data-summary").inner_text()
    shot(page, "pref-01-data-pair")

    tab(page, "4 · Train")
    pick(page, "train-objective", "DPO: prefer")
    page.wait_for_selector("#objective-dpo-beta", state="visible")
    _option(page, "train-adapter-from", sft_run.name)
    start_run(page, "browser-dpo", max_steps=4, logging_steps=1)
    page.wait_for_selector("#loss-plot .legendtext:text-is('reward margin')", timeout=300_000)  # streamed
    page.wait_for_selector("#train-progress-label:has-text('done')", timeout=300_000)
    page.wait_for_selector("#train-result :text('Finished')")
    legend = page.eval_on_selector_all("#loss-plot .legendtext", "els => els.map(e => e.textContent)")  # SVG
    assert "reward margin" in legend and "reward accuracy" in legend and "train loss" in legend
    shot(page, "pref-02-dpo-chart")

    tab(page, "5 · Chat")
    dpo_name = next(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("browser-dpo"))
    _option(page, "chat-run", dpo_name)
    _option(page, "chat-compare", sft_run.name)
    page.keyboard.press("Escape")  # close the multiselect's list
    page.wait_for_selector("#chat-extra-1", state="visible")
    page.locator("#chat-input textarea").fill("Who are you?")  # the tiny base answers it (q1? can end at once)
    page.locator("#chat-send").click()
    try:
        for pane in ("chat-base", "chat-tuned", "chat-extra-1"):
            page.wait_for_function(
                f"[...document.querySelectorAll('#{pane} .bot-row')].some(e => e.innerText.trim().length > 0)",
                timeout=120_000)
    finally:
        shot(page, "pref-03-chat-three-panes")
    assert sft_run.name in page.locator("#chat-extra-1").inner_text()  # the third pane is the SFT run
