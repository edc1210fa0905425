"""Prompt-set evaluation: base and tuned answers side by side, held-out loss and perplexity, and answer
metrics against references (ROUGE, BLEU, chrF, exact match, contains-answer; see ``studio.metrics``).

    report = evaluate_run("runs/lora-identity", prompts_file="prompts.txt")
    print(report.table())          # also written to runs/lora-identity/eval.jsonl

Prompts come typed (a list of strings, or lines read by ``parse_prompts``), from a file (.txt: one per line,
``prompt => reference`` gives the expected answer too; .jsonl/.json/.csv/.parquet:
prompt/reference pairs or chat rows, whose last answer becomes the reference), or from the run's
held-out split.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from studio import checkpoints, data, metrics
from studio.config import ConfigError, DataSpec, RunConfig

__all__ = ["EvalItem", "EvalReport", "load_prompts", "prompts_from_column", "items_from_rows", "heldout_rows",
           "parse_prompts", "REFERENCE_ARROW", "mean_loss", "evaluate", "evaluate_run", "EVAL_FILE"]

EVAL_FILE = "eval.jsonl"
_REFERENCE_KEYS = ("reference", "response", "answer", "completion", "output")
REFERENCE_ARROW = "=>"  # 'prompt => reference' in typed prompts and .txt prompt files


@dataclass
class EvalItem:
    """One prompt (a user message or a whole conversation) and, when known, the expected answer."""

    prompt: str | list[dict]
    reference: str | None = None

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}] if isinstance(self.prompt, str) else list(self.prompt)

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.messages()[-1]["content"]


def items_from_rows(rows: list[dict]) -> list[EvalItem]:
    """Chat rows -> prompts: the conversation up to the last answer, which becomes the reference."""
    items = []
    for row in rows:
        msgs = row.get("messages")
        if not msgs:
            continue  # plain text rows have no prompt/answer split
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            items.append(EvalItem(list(msgs)))
        elif last > 0:
            items.append(EvalItem(list(msgs[:last]), msgs[last]["content"]))
    return items


def parse_prompts(text: str | None) -> list[EvalItem]:
    """One EvalItem per line with a prompt; ``prompt => reference`` gives the expected answer too."""
    items = []
    for line in (text or "").splitlines():
        prompt, arrow, reference = line.partition(REFERENCE_ARROW)
        if prompt.strip():
            items.append(EvalItem(prompt.strip(), reference.strip() if arrow else None))
    return items


def load_prompts(path: str | Path) -> list[EvalItem]:
    """Prompts from a file: .txt (``parse_prompts``), or rows with a prompt (+ reference) or chat messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--prompts: no such file: {path}")
    if path.suffix == ".txt":
        items = parse_prompts(path.read_text(encoding="utf-8"))
    else:
        items = _prompt_rows(path)
    if not items:
        raise ConfigError(f"{path}: no prompts in it")
    return items


def _prompt_rows(path: Path) -> list[EvalItem]:
    if path.suffix == ".jsonl":  # the plain {"prompt": ...} shape needs no reference, unlike training data
        try:
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except ValueError as err:
            raise ConfigError(f"{path}: not valid JSON lines ({err})") from None
        if records and all(isinstance(r, dict) and isinstance(r.get("prompt"), str) for r in records):
            ref = lambda r: next((r[k] for k in _REFERENCE_KEYS if isinstance(r.get(k), str)), None)  # noqa: E731
            return [EvalItem(r["prompt"], ref(r)) for r in records]
    return items_from_rows(data.load_rows(DataSpec(path=str(path))).rows)


def prompts_from_column(path: str, column: str, reference: str | None = None, limit: int | None = None,
                        split: str = "train") -> list[EvalItem]:
    """Prompts from one column of a dataset (file, folder or hub name), references from another."""
    from studio.data.sources import read_records

    items = []
    for rec in read_records(path, split=split):
        row = rec.data if isinstance(rec.data, dict) else {}
        if column not in row:
            raise ConfigError(f"{rec.where}: no column {column!r} (columns: {', '.join(map(str, row)) or 'none'})")
        ref = row.get(reference) if reference else None
        if isinstance(row[column], str) and row[column].strip():
            items.append(EvalItem(row[column], ref if isinstance(ref, str) else None))
        if limit and len(items) >= limit:
            break
    return items


def heldout_rows(cfg: RunConfig) -> list[dict]:
    """The run's held-out rows (val_fraction split with the run's seed, plus val_path), as training saw them."""
    from studio import data

    rows: list[dict] = []
    if cfg.data.val_fraction > 0:
        # the same split build() makes, so no training row leaks in
        rows += data.split_rows(data.load_rows(cfg.data).rows, cfg.data.val_fraction, cfg.train.seed)[1]
    if cfg.data.val_path:
        rows += data.load_rows(cfg.data, path=cfg.data.val_path).rows
    return rows


def mean_loss(model, tokenizer, rows: list[dict], max_len: int = 512, train_on: str = "assistant") -> float | None:
    """Token-mean cross-entropy over the trained tokens of ``rows`` (masked as in training); None if none."""
    import torch

    from studio import data

    total, count = 0.0, 0
    device = next(model.parameters()).device
    for ex in data.tokenize_rows(rows, tokenizer, max_len=max_len, train_on=train_on).examples:
        n = sum(t != data.IGNORE for t in ex["labels"][1:])  # the first token is never predicted
        if n == 0:
            continue
        ids, labels = torch.tensor([ex["input_ids"]], device=device), torch.tensor([ex["labels"]], device=device)
        with torch.no_grad():
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        total, count = total + float(loss) * n, count + n
    return total / count if count else None


@dataclass
class EvalReport:
    """Answers per prompt and pane, with scores; ``summary`` holds loss, perplexity and the metrics per pane."""

    panes: list[str]
    rows: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write one JSON line per prompt and a last {"summary": ...} line, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        lines = [json.dumps(r, ensure_ascii=False) for r in self.rows] + [json.dumps({"summary": self.summary})]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    def table(self, width: int = 48) -> str:
        """The answers side by side, one block per prompt, then the summary."""
        out = []
        for i, row in enumerate(self.rows, 1):
            out.append(f"[{i}] {row['prompt']}")
            if row.get("reference"):
                out.append(f"    reference: {row['reference']}")
            cols = [textwrap.wrap(row["answers"][p] or "(empty)", width) for p in self.panes]
            out.append("  ".join(f"{p:<{width}}" for p in self.panes))
            out += ["  ".join(f"{c:<{width}}" for c in line) for line in zip_longest(*cols, fillvalue="")]
            if row.get("scores"):
                out.append("  ".join(_scores_line(row["scores"][p]).ljust(width) for p in self.panes))
            out.append("")
        for p in self.panes:
            s = self.summary.get(p, {})
            out.append(f"{p}: loss {_fmt(s.get('loss'))}  perplexity {_fmt(s.get('perplexity'))}  "
                       + _scores_line(s))
        if self.summary.get("loss_on"):
            out.append(f"(loss on {self.summary['loss_on']})")
        return "\n".join(out)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _scores_line(scores: dict) -> str:
    return "  ".join(f"{metrics.LABELS[k]} {_fmt(scores.get(k))}" for k in metrics.METRICS)


def evaluate(engine, items: list[EvalItem], panes: dict, max_new_tokens: int = 96,
             loss_rows: list[dict] | None = None, max_len: int = 512) -> EvalReport:
    """Answer every item in every pane (greedy), score against references and compute losses.

    Args:
        engine: a ChatEngine with the adapters loaded.
        items: the prompts.
        panes: label -> engine pane, e.g. {"base": None, "tuned": "tuned"}.
        max_new_tokens: longest answer.
        loss_rows: chat rows to compute loss and perplexity on (None: no loss).
        max_len: rows are cut to this many tokens for the loss.
    """
    from studio.chat import GenSettings

    gen = GenSettings(max_new_tokens=max_new_tokens, greedy=True)
    labels, keys = list(panes), list(panes.values())
    report = EvalReport(labels)
    for item in items:
        final: dict = {}
        for final in engine.stream(item.messages(), panes=keys, gen=gen):
            pass
        answers = {label: final.get(key, "") for label, key in panes.items()}
        row = {"prompt": item.prompt_text(), "reference": item.reference, "answers": answers}
        if item.reference:
            row["scores"] = {label: metrics.score(a, item.reference) for label, a in answers.items()}
        report.rows.append(row)
    scored = [r for r in report.rows if "scores" in r]
    for label, key in panes.items():
        loss = None
        if loss_rows:
            with engine.using(key) as model:
                loss = mean_loss(model, engine.tokenizer, loss_rows, max_len=max_len)
        report.summary[label] = {"loss": loss, "perplexity": math.exp(loss) if loss is not None else None,
                                 **metrics.corpus([r["answers"][label] for r in scored],
                                                  [r["reference"] for r in scored])}
    return report


def evaluate_run(run_dir: str | Path, items: list[EvalItem] | None = None, prompts_file: str | Path | None = None,
                 max_new_tokens: int = 96, save: bool = True, engine=None, pane: str = "tuned") -> EvalReport:
    """Evaluate a run's tuned model against its base and write ``eval.jsonl`` into the run folder.

    Prompts: ``items``, else ``prompts_file``, else the run's held-out split. Loss and perplexity are
    computed on the held-out split when the run has one, else on the prompt/reference pairs.
    ``engine`` (optional) already holds the run's adapter under the name ``pane``, e.g. the UI's shared one.
    """
    from studio.chat import ChatEngine

    target = run_dir  # RUN@N: the result at checkpoint N, beside the same base and held-out split
    run_dir = checkpoints.split(run_dir)[0]
    cfg = RunConfig.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if cfg is None:
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    held = heldout_rows(cfg)
    if items is None:
        items = load_prompts(prompts_file) if prompts_file else items_from_rows(held)
    if not items:
        raise ConfigError(f"{run_dir}: no prompts: give --prompts FILE (the run has no held-out split)")
    if engine is None:
        engine = ChatEngine(cfg.model, system_prompt=cfg.data.system_prompt)
        engine.add_adapter(pane, target)
    pairs = [{"messages": it.messages() + [{"role": "assistant", "content": it.reference}]}
             for it in items if it.reference]
    loss_rows, loss_on = (held, "the held-out split") if held else (pairs, "the prompt/reference pairs")
    report = evaluate(engine, items, {"base": None, "tuned": pane}, max_new_tokens, loss_rows or None,
                      max_len=cfg.train.max_seq_len)
    report.summary["loss_on"] = loss_on if loss_rows else None
    report.summary["prompts"] = len(items)
    if save:
        report.save(eval_path(target))
    return report


def eval_path(target: str | Path) -> Path:
    """Where a run's report goes: RUN/eval.jsonl, or RUN/eval@N.jsonl for the result at checkpoint N."""
    run_dir, step = checkpoints.split(target)
    return run_dir / (EVAL_FILE if step is None else f"{Path(EVAL_FILE).stem}@{step}{Path(EVAL_FILE).suffix}")
