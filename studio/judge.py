"""A pairwise judge: a model the user picks reads two answers to the same prompt and says which is better.

    report = judge_run("runs/lora-identity", items, judge="base")   # or judge="path/to/model-folder"
    print(report.table())          # also written to runs/lora-identity/judge.json

Each pair is judged twice, with the answers in both orders, to cancel the judge's position bias; as in
MT-Bench (Zheng et al. 2023, sec. 3.3), a side wins only when the judge prefers it in both orders, and a
pair judged inconsistently counts as a tie. The prompt the judge reads is ``DEFAULT_PROMPT`` unless the
user gives another (it must keep the ``{question}``, ``{answer_a}`` and ``{answer_b}`` slots).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from studio import models
from studio.chat import ChatEngine
from studio.config import ConfigError, ModelSpec, RunConfig
from studio.evaluate import evaluate

__all__ = ["DEFAULT_PROMPT", "JUDGE_FILE", "SLOTS", "Verdict", "JudgeReport", "fill", "parse_verdict", "judge_pair",
           "compare", "ModelJudge", "judge_run"]

JUDGE_FILE = "judge.json"
SLOTS = ("{question}", "{answer_a}", "{answer_b}")
DEFAULT_PROMPT = """You compare two answers to the same question.

Question:
{question}

Answer A:
{answer_a}

Answer B:
{answer_b}

Which answer is more helpful, correct and clear? Reply on one line: A, B or tie, a colon, then a short reason.
Verdict:"""
_VERDICT = re.compile(r"\b(A|B|[Tt]ie|TIE)\b")  # a lower-case "a" is the article, not a verdict


@dataclass
class Verdict:
    """One reading by the judge: ``winner`` is "A", "B", "tie", or None when its reply named none."""

    winner: str | None
    reason: str
    raw: str


def fill(template: str, question: str, answer_a: str, answer_b: str) -> str:
    """The judge's prompt: ``template`` with its three slots filled (other braces are left as they are)."""
    missing = [s for s in SLOTS if s not in template]
    if missing:
        raise ConfigError(f"the judge prompt lacks {', '.join(missing)}: it needs all of {', '.join(SLOTS)}")
    for slot, text in zip(SLOTS, (question, answer_a, answer_b)):
        template = template.replace(slot, text)
    return template


def parse_verdict(text: str) -> Verdict:
    """The first A, B or tie on the reply's first non-empty line, and what follows it as the reason."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    m = _VERDICT.search(line)
    if m is None:
        return Verdict(None, line[:200], text)
    winner = "tie" if m.group(1).lower() == "tie" else m.group(1)
    reason = line[m.end():].lstrip(" :.-)]").strip() or line
    return Verdict(winner, reason[:200], text)


def judge_pair(judge: Callable[[str], str], question: str, first: str, second: str,
               template: str = DEFAULT_PROMPT) -> tuple[str, list[Verdict]]:
    """Judge ``first`` against ``second`` in both orders; returns ("win" | "tie" | "loss" for ``first``, verdicts).

    Order 1 shows ``first`` as A; order 2 shows it as B. ``first`` wins only if both orders prefer it.
    """
    v1 = parse_verdict(judge(fill(template, question, first, second)))
    v2 = parse_verdict(judge(fill(template, question, second, first)))
    prefers = ({"A": "first", "B": "second"}.get(v1.winner), {"A": "second", "B": "first"}.get(v2.winner))
    if prefers == ("first", "first"):
        return "win", [v1, v2]
    if prefers == ("second", "second"):
        return "loss", [v1, v2]
    return "tie", [v1, v2]


@dataclass
class JudgeReport:
    """Outcomes of ``first`` against ``second`` per prompt, with the judge's readings in both orders."""

    first: str
    second: str
    judge: str
    template: str
    rows: list[dict] = field(default_factory=list)

    def rates(self) -> dict[str, float]:
        """Share of prompts that ``first`` won, tied and lost (each 0..1)."""
        n = len(self.rows) or 1
        return {k: sum(r["outcome"] == k for r in self.rows) / n for k in ("win", "tie", "loss")}

    def table(self) -> str:
        """One block per prompt (outcome and the two one-line reasons), then the rates."""
        out = []
        for i, r in enumerate(self.rows, 1):
            out.append(f"[{i}] {r['prompt']}  ->  {self.first} {r['outcome']}")
            for order, v in zip(("A=" + self.first, "A=" + self.second), r["verdicts"]):
                out.append(f"    ({order}) {v['winner'] or 'no verdict'}: {v['reason']}")
        rates = self.rates()
        out.append(f"{self.first} vs {self.second} (judge: {self.judge}): win {rates['win']:.0%}, "
                   f"tie {rates['tie']:.0%}, loss {rates['loss']:.0%} over {len(self.rows)} prompts")
        return "\n".join(out)

    def save(self, path: str | Path) -> Path:
        """Write the report (rows, rates and the prompt the judge read) as JSON, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        data = {**asdict(self), "rates": self.rates()}
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
        return path


def compare(judge: Callable[[str], str], prompts: list[str], first: list[str], second: list[str],
            labels: tuple[str, str] = ("tuned", "base"), judge_name: str = "judge",
            template: str = DEFAULT_PROMPT) -> JudgeReport:
    """Judge two lists of answers to the same prompts, pair by pair, in both orders."""
    fill(template, "", "", "")  # a template without its slots fails before the first (slow) judgement
    report = JudgeReport(labels[0], labels[1], judge_name, template)
    for prompt, a, b in zip(prompts, first, second, strict=True):
        outcome, verdicts = judge_pair(judge, prompt, a, b, template)
        report.rows.append({"prompt": prompt, "answers": {labels[0]: a, labels[1]: b}, "outcome": outcome,
                            "verdicts": [asdict(v) for v in verdicts]})
    return report


class ModelJudge:
    """A local causal model as a judge: the prompt as a user turn (with its chat template), a greedy reply."""

    def __init__(self, model, tokenizer, max_new_tokens: int = 48):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens

    def __call__(self, prompt: str) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                          return_dict=True, return_tensors="pt")["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        ids = ids.to(next(self.model.parameters()).device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=self.max_new_tokens, pad_token_id=pad)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def judge_run(run_dir: str | Path, items: list, judge: str = "base", other: str | None = None,
              template: str = DEFAULT_PROMPT, engine=None, pane: str = "tuned", max_new_tokens: int = 96,
              save: bool = True) -> JudgeReport:
    """Answer ``items`` with the tuned run and the base (or ``other`` run), then judge tuned against it.

    Args:
        run_dir: the tuned run; items: EvalItems (their references are not shown to the judge).
        judge: "base" (the run's base model, adapters off: a weak judge, but no second model), "embedded"
            or a local causal model folder, loaded once for the judging.
        other: a second run on the same base to compare against instead of the base.
        template: the judge's prompt, with the slots in ``SLOTS``.
        engine: a ChatEngine already holding the run under ``pane`` (the UI's shared one), else one is made.
    """
    fill(template, "", "", "")
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (it has no config.yaml)")
    if judge not in ("base", "embedded") and not Path(judge).is_dir():
        raise ConfigError(f"judge {judge!r}: give 'base', 'embedded' or a local model folder")
    if engine is None:
        engine = ChatEngine(RunConfig.load(run_dir / "config.yaml").model)
        engine.add_adapter(pane, run_dir)
    rival = Path(other).name if other else "base"
    if other and rival not in engine.adapters():
        engine.add_adapter(rival, other)
    answers = evaluate(engine, [type(it)(it.prompt) for it in items], {"tuned": pane, rival: rival if other else None},
                       max_new_tokens=max_new_tokens)
    prompts = [r["prompt"] for r in answers.rows]
    tuned, theirs = [r["answers"]["tuned"] for r in answers.rows], [r["answers"][rival] for r in answers.rows]
    if judge == "base":
        with engine.using(None) as model:
            report = compare(ModelJudge(model, engine.tokenizer), prompts, tuned, theirs, ("tuned", rival),
                             "the base model", template)
    else:
        model, tok = models.load(ModelSpec(id=str(judge)))
        report = compare(ModelJudge(model.eval(), tok), prompts, tuned, theirs, ("tuned", rival), str(judge),
                         template)
    if save:
        report.save(run_dir / JUDGE_FILE)
    return report
