"""The Data tab's view of preference rows (each pair's prompt, then chosen and rejected side by side) and of
GRPO's prompt rows (each prompt as the model reads it, with the column the rewards check).

Widgets' HTML only; the rows come from ``studio.data.preference.preview`` and ``studio.data.prompts`` (the same
loaders training uses).
"""

from __future__ import annotations

import html

from studio import rewards
from studio.data import preference, prompts

__all__ = ["pair_summary", "render_pair", "prompt_summary", "PAIR_CSS"]

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


def prompt_summary(cfg, tokenizer, n: int) -> tuple[str, str]:
    """(markdown summary with rows and skipped counts, HTML of the first ``n`` prompts) for prompt-only data,
    checked against the columns ``train.rewards`` read; DataError when the data holds no prompt rows."""
    needs = rewards.columns_read(cfg.train.rewards)
    built = prompts.build(cfg, tokenizer, needs=needs)
    _, shown = prompts.preview(cfg, tokenizer, n=n, needs=needs)
    lines = [f"**Format:** prompts (the model writes the answers: pick GRPO and its rewards on the Train tab) · "
             f"**rows:** {len(built.train) + len(built.eval)} · **skipped:** {built.stats.skipped}"]
    lines += [f"- {reason}" for reason in built.stats.skipped_examples]
    column = needs[0] if needs else None
    body = "".join(f"<div class='pair'><pre class='prompt'>{html.escape(text)}</pre>"
                   + (f"<pre><b>{html.escape(column)}</b> (what the rewards check)\n{html.escape(str(value))}</pre>"
                      if column else "") + "</div>" for text, value in shown)
    return "\n".join(lines), PAIR_CSS + body
