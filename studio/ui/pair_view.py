"""The Data tab's view of preference rows: each pair's prompt, then chosen and rejected side by side.

Widgets' HTML only; the rows come from ``studio.data.preference.preview`` (the same loader training uses).
"""

from __future__ import annotations

import html

from studio.data import preference

__all__ = ["pair_summary", "render_pair", "PAIR_CSS"]

PAIR_CSS = ("<style>.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin-bottom:10px}"
            ".pair pre{white-space:pre-wrap;font-size:12px;border:1px solid var(--border-color-primary);padding:6px;"
            "border-radius:4px;margin:0}.pair .prompt{grid-column:1 / span 2}.pair mark.chosen{background:#c7f0c2;"
            "color:#111}.pair mark.rejected{background:#f6c9c9;color:#111}</style>")


def render_pair(prompt: str, chosen: str, rejected: str, second: str = "rejected") -> str:
    """One row as HTML: the prompt across, the two answers (the tokens the objective scores) marked below it."""
    return (f"<div class='pair'><pre class='prompt'>{html.escape(prompt)}</pre>"
            f"<pre><b>chosen</b>\n<mark class='chosen'>{html.escape(chosen)}</mark></pre>"
            f"<pre><b>{second}</b>\n<mark class='rejected'>{html.escape(rejected)}</mark></pre></div>")


def pair_summary(cfg, tokenizer, n: int) -> tuple[str, str]:
    """(markdown summary, HTML of the first ``n`` rows) for preference data; DataError when it is none."""
    fmt, shown = preference.preview(cfg, tokenizer, n=n)
    about = preference.PREFERENCE_FORMATS[fmt].about
    summary = (f"**Format:** {fmt} ({about}) · train with a preference objective "
               f"({'dpo, orpo, kto or simpo' if fmt == 'preference' else 'kto'}) on the Train tab")
    second = "rejected" if fmt == "preference" else "label"
    return summary, PAIR_CSS + "".join(render_pair(p, c, r, second) for p, c, r in shown)
