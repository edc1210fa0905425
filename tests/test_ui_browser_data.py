"""Data quality and combined runs in a real browser (Playwright driving Debian's Chromium) with a tiny model.

On the Data tab, exact-duplicate removal is switched on for a file with repeated rows and the preview's
summary shows how many rows it dropped; on the Runs tab, two finished LoRA runs are combined into a new run,
which then appears in the runs table. Screenshots go to test-artifacts/browser/ (helpers in tests/browser.py).
"""

from __future__ import annotations

import json

import pytest

from studio.ui import paths
from tests.browser import enter, pick, shot, tab
from tests.runfolders import make_run

pytestmark = pytest.mark.browser


def test_drop_duplicates_then_combine_two_runs(studio_url, page, tiny_dirs, tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(paths.ENV, str(folder))  # the studio reads typed paths only under allowed folders
    rows = [{"prompt": f"question {i % 4}?", "completion": f"answer {i % 4}."} for i in range(7)]  # 3 repeats
    source = folder / "dups.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows))
    for name, seed in (("task-a", 1), ("task-b", 2)):
        make_run(tmp_path / "runs", tiny_dirs["llama"], name, "lora", {"r": 4}, seed=seed)

    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")
    tab(page, "3 · Data")
    enter(page, "#data-path input", source)
    page.wait_for_function("document.querySelector('#data-summary').innerText.includes('rows:** 7')"
                           " || document.querySelector('#data-summary').innerText.includes('rows: 7')")
    page.get_by_text("quality filters (applied before training)").click()
    pick(page, "data-dedup", "exact")
    page.locator("#data-preview-btn").click()
    page.wait_for_function(
        "document.querySelector('#data-summary').innerText.includes('exact_duplicates: dropped 3')")
    summary = page.locator("#data-summary").inner_text()
    assert "rows: 4" in summary and "repeats row 1" in summary
    shot(page, "data-01-duplicates-dropped")

    tab(page, "6 · Runs")
    page.locator("#runs-refresh").click()
    page.get_by_text("Combine finished LoRA runs into a new run").click()
    for name in ("task-a", "task-b"):
        page.wait_for_function(f"document.querySelector('#runs-table').innerText.includes('{name}')")
        pick(page, "combine-runs", name)
    pick(page, "combine-method", "linear")
    page.locator("#combine-weights textarea, #combine-weights input").first.fill("0.7, 0.3")
    page.locator("#combine-name textarea, #combine-name input").first.fill("both-tasks")
    page.locator("#combine-go").click()
    page.wait_for_selector("#combine-message :text('Combined 2 runs')", timeout=120_000)
    assert (tmp_path / "runs" / "both-tasks" / "adapter").is_dir()
    page.locator("#runs-refresh").click()
    page.wait_for_function("document.querySelector('#runs-table').innerText.includes('both-tasks')")
    shot(page, "data-02-runs-combined")
