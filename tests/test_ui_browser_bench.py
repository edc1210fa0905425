"""The Benchmarks panel in a real browser: the shipped multiple-choice task on base and tuned with a small limit,
shown as a table and a bar chart whose whiskers are the harness's standard errors.

The run is a folder written from the tiny model (tests/runfolders.py), so no training is needed; screenshots go to
test-artifacts/browser/ (helpers in tests/browser.py).
"""

from __future__ import annotations

import pytest

from studio import bench
from tests.browser import enter, shot, tab
from tests.runfolders import make_run

pytestmark = pytest.mark.browser


def test_benchmarks_panel_shows_table_and_chart(studio_url, page, tiny_dirs, tmp_path):
    run = make_run(tmp_path / "runs", tiny_dirs["llama"], "bench-run", scale=0.5)  # the studio's runs folder
    page.goto(studio_url)
    page.wait_for_selector("#arch-card table")

    tab(page, "5 · Chat")
    page.locator("#chat-run input").first.click()
    page.get_by_role("option", name="bench-run").first.click()
    page.get_by_text("Benchmarks", exact=True).click()  # open the accordion
    page.wait_for_selector("#bench-run")
    ticked = page.locator("#bench-tasks label:has(input:checked)")
    assert ticked.all_inner_texts() == ["studio_mc"]  # the shipped multiple-choice task, ticked by default
    enter(page, "#bench-limit input[type=number]", 4)
    page.locator("#bench-run").click()
    # when done, one line: what ran and where it was saved, or why not
    page.wait_for_function("['saved', 'Cannot', 'failed'].some(w => "
                           "document.querySelector('#bench-summary').innerText.includes(w))", timeout=180_000)
    shot(page, "bench-01-table-chart")
    summary = page.locator("#bench-summary").inner_text()
    assert "studio_mc on base, tuned, 4 examples per task" in summary and "bench.json" in summary
    report = bench.BenchReport.load(run / bench.BENCH_FILE)  # what the panel saved is what it shows
    assert report.models == ["base", "tuned"] and report.limit == 4
    table = page.locator("#bench-table").inner_text()
    for label in ("base", "tuned"):
        for metric in ("acc", "acc_norm"):
            s = report.get(label, "studio_mc", metric)
            assert s.n == 4 and f"{s.value:.3f} ± {s.stderr:.3f}" in table
    assert "studio_mc" in table and "acc_norm" in table

    # the chart: two bar traces (base, tuned), each with a bar and a standard-error whisker per metric
    chart = page.locator("#bench-chart")
    assert chart.locator(".legendtext").all_text_contents() == ["base", "tuned"]  # SVG text has no innerText
    assert chart.locator(".barlayer .trace").count() == 2
    assert chart.locator(".barlayer .point").count() == 4
    assert chart.locator(".errorbar path.yerror").count() == 4
    assert "scores ± stderr" in chart.locator(".gtitle").text_content()
