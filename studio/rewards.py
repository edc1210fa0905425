"""Rewards a person defines without code: the built-in kinds, their settings, checks and scoring functions.

A run's ``train.rewards`` is a list of mappings, one per reward, each with a ``kind``, a ``weight`` and the
kind's own settings::

    rewards:
      - {kind: match, column: answer, extract: "####\\s*(.+)", mode: number, tolerance: 0.01, weight: 1.0}
      - {kind: format, pattern: "^<answer>.*</answer>$", weight: 0.5}
      - {kind: length, min_tokens: 5, max_tokens: 60, weight: 0.2}
      - {kind: contains, words: [because], weight: 0.1}
      - {kind: excludes, words: [sorry], weight: 0.1}
      - {kind: model, path: runs/my-reward-model, weight: 1.0}

Every score is a pure function of one answer's text (and the row's columns), so the kinds are tested on
hand-made answers. GRPO (TRL's GRPOTrainer) adds the weighted scores into one reward per answer and reinforces
the answers that beat their group's mean. ``check`` returns one line per bad setting before anything loads.

    found = check(cfg.train.rewards)               # [] when every reward is well formed
    funcs = scorers(cfg.train.rewards, count_tokens, model_scorer)   # TRL reward functions, named per reward
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from studio.config import Setting

__all__ = ["KINDS", "RewardKind", "check", "batch_problems", "columns_read", "names", "weights", "text_of", "normalise",
           "extract", "parse_number", "score_match", "score_format", "score_length", "score_contains",
           "score_excludes", "scorers", "chart_values", "SampleBoard"]


@dataclass(frozen=True)
class RewardKind:
    """One built-in reward: its settings and what it scores."""

    name: str
    title: str
    summary: str
    settings: tuple[Setting, ...]

    def defaults(self) -> dict:
        return {s.name: s.default for s in self.settings}


_WEIGHT = Setting("weight", float, 1.0, "how much this reward counts in the total (0 turns it off)",
                  min=-10.0, max=10.0, step=0.1)
_WORDS = Setting("words", list, [], "the words (or phrases), comma separated")
_CASE = Setting("case_sensitive", bool, False, "tell upper from lower case")

KINDS: dict[str, RewardKind] = {k.name: k for k in (
    RewardKind("match", "answer matches a column",
               "1 when the answer (or the part the regex extracts) equals the row's column, else 0", (
                   Setting("column", str, "answer", "the data column holding the right answer"),
                   Setting("extract", str, "", "a regex that picks the answer out (its first group if it has one), "
                           "e.g. <answer>(.*)</answer> or ####\\s*(.+); empty: the whole answer"),
                   Setting("mode", str, "exact", "exact: equal after normalising case, spaces and a final period; "
                           "number: the last number within the tolerance", choices=("exact", "number")),
                   Setting("tolerance", float, 0.0, "number mode: the largest difference still right",
                           min=0.0, max=1e9, step=0.01),
                   _WEIGHT)),
    RewardKind("format", "follows a format", "1 when the regex matches the answer, else 0", (
        Setting("pattern", str, "", "a regex the answer must match (searched; anchor with ^ and $ for the whole)"),
        _WEIGHT)),
    RewardKind("length", "length in a range", "0 inside the token range, down to -1 as the answer leaves it", (
        Setting("min_tokens", int, 1, "fewest answer tokens without penalty", min=0, max=1_000_000),
        Setting("max_tokens", int, 256, "most answer tokens without penalty", min=1, max=1_000_000),
        _WEIGHT)),
    RewardKind("contains", "contains words", "the share of the words the answer contains (1: all of them)",
               (_WORDS, _CASE, _WEIGHT)),
    RewardKind("excludes", "does not contain words", "1 when the answer contains none of the words, else 0",
               (_WORDS, _CASE, _WEIGHT)),
    RewardKind("model", "reward model", "a sequence-classification model's score for prompt and answer", (
        Setting("path", str, "", "a local folder with a sequence-classification model (safetensors)"),
        _WEIGHT)),
)}


# ---------------------------------------------------------------- checks


def _regex_problem(text: str, key: str) -> str | None:
    try:
        re.compile(text)
    except re.error as err:
        return f"{key}: {text!r} is not a valid regex ({err})"
    return None


def _one_problems(item, key: str, exists: Callable[[str], bool]) -> list[str]:
    if not isinstance(item, dict):
        return [f"{key}: expected a mapping with a kind, got {item!r}"]
    kind = KINDS.get(item.get("kind"))
    if kind is None:
        return [f"{key}.kind: {item.get('kind')!r} is not one of {', '.join(KINDS)}"]
    known = {s.name: s for s in kind.settings}
    out = [f"{key}.{k}: unknown setting for a {kind.name} reward (allowed: {', '.join(known)})"
           for k in item if k not in known and k not in ("kind", "name")]
    values = {**kind.defaults(), **{k: known[k].coerce(v) for k, v in item.items() if k in known}}
    out += [p for k, s in known.items() if k in item and (p := s.problem(item[k], f"{key}.{k}"))]
    if out:
        return out
    for field in ("extract", "pattern"):
        if values.get(field) and (p := _regex_problem(values[field], f"{key}.{field}")):
            out.append(p)
    if kind.name == "format" and not values["pattern"]:
        out.append(f"{key}.pattern: a format reward needs a regex")
    if kind.name == "match" and not str(values["column"]).strip():
        out.append(f"{key}.column: name the data column that holds the right answer")
    if kind.name == "length" and values["min_tokens"] > values["max_tokens"]:
        out.append(f"{key}: min_tokens {values['min_tokens']} is above max_tokens {values['max_tokens']}")
    if kind.name in ("contains", "excludes") and not [w for w in values["words"] if str(w).strip()]:
        out.append(f"{key}.words: list at least one word")
    if kind.name == "model" and not (values["path"] and exists(values["path"])):
        out.append(f"{key}.path: {values['path']!r} is no folder with a model (config.json)")
    return out


def check(rewards, exists: Callable[[str], bool] = lambda path: True, key: str = "train.rewards") -> list[str]:
    """Every problem with a reward list, one line each: an unknown kind or setting, a regex that does not
    compile, a range upside down, no words, a missing model folder, no reward or weights that are all zero.

    Args:
        exists: whether a reward-model folder is usable (the caller's file check; the default trusts it).
    """
    if not isinstance(rewards, list) or not rewards:
        return [f"{key}: GRPO needs at least one reward (match, format, length, contains, excludes, model)"]
    out = [p for i, item in enumerate(rewards) for p in _one_problems(item, f"{key}[{i}]", exists)]
    if not out and all(float(item.get("weight", 1.0)) == 0 for item in rewards):
        out.append(f"{key}: every weight is 0, so nothing is rewarded")
    return out


def batch_problems(micro_batch: int, grad_accum: int, values: dict, method_fmt: str, method_name: str) -> list[str]:
    """How an online objective's knobs clash with the run: the batch counts answers, so it must hold whole
    groups of ``num_generations``; a KL reference (beta > 0) needs a PEFT adapter to switch off."""
    out, n = [], int(values["num_generations"])
    if (micro_batch * grad_accum) % n:
        out.append(f"train.micro_batch_size x train.grad_accum ({micro_batch} x {grad_accum}) counts answers and "
                   f"must be a multiple of train.objective.num_generations ({n})")
    if float(values.get("beta", 0)) > 0 and method_fmt != "peft":
        out.append(f"train.objective.beta: a KL reference needs a PEFT method (lora, dora...); {method_name} "
                   "changes the base weights, so set beta 0")
    return out


def columns_read(rewards: list[dict]) -> list[str]:
    """The data columns the rewards read (match rewards' ``column``)."""
    return sorted({str(r.get("column", "answer")) for r in rewards if r.get("kind") == "match"})


def names(rewards: list[dict]) -> list[str]:
    """One name per reward for logs and charts: its ``name``, else its kind; repeats get _2, _3."""
    out: list[str] = []
    for r in rewards:
        base = re.sub(r"\W+", "_", str(r.get("name") or r["kind"])).strip("_") or r["kind"]
        name, n = base, 2
        while name in out:
            name, n = f"{base}_{n}", n + 1
        out.append(name)
    return out


def weights(rewards: list[dict]) -> list[float]:
    return [float(r.get("weight", 1.0)) for r in rewards]


# ---------------------------------------------------------------- scores (pure functions)


def text_of(completion) -> str:
    """An answer's text: plain text, or the contents of a message list (TRL's conversational answers)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return "" if completion is None else str(completion)


def normalise(text) -> str:
    """Lower case, spaces collapsed, surrounding quotes, spaces and a final period dropped."""
    text = re.sub(r"\s+", " ", str(text)).strip().strip("\"'`").strip()
    return text.rstrip(".").rstrip().lower()


def extract(text: str, pattern: str) -> str | None:
    """The part of ``text`` the regex picks: its first group that matched, else the whole match; None when
    it does not match. An empty pattern returns the text."""
    if not pattern:
        return text
    found = re.search(pattern, text, re.DOTALL)
    if found is None:
        return None
    groups = [g for g in found.groups() if g is not None]
    return (groups[0] if groups else found.group(0)).strip()


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def parse_number(text) -> float | None:
    """The last number in ``text`` (thousands commas allowed), or None when it holds none."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    found = _NUMBER.findall(str(text or ""))
    if not found:
        return None
    value = float(found[-1].replace(",", ""))
    return value if math.isfinite(value) else None


def score_match(answer: str, target, *, extract_re: str = "", mode: str = "exact", tolerance: float = 0.0) -> float:
    """1.0 when the (extracted) answer equals ``target`` (exact after normalising, or a number within
    ``tolerance``), else 0.0; an answer the regex finds nothing in scores 0."""
    if target is None:
        return 0.0
    picked = extract(answer, extract_re)
    if picked is None:
        return 0.0
    if mode == "number":
        got, want = parse_number(picked), parse_number(target)
        return float(got is not None and want is not None and abs(got - want) <= tolerance + 1e-12)
    return float(normalise(picked) == normalise(target))


def score_format(answer: str, pattern: str) -> float:
    """1.0 when ``pattern`` is found in the answer (dot matches newlines), else 0.0."""
    return float(re.search(pattern, answer, re.DOTALL) is not None)


def score_length(tokens: int, min_tokens: int, max_tokens: int) -> float:
    """0.0 inside [min_tokens, max_tokens]; outside, minus the distance over the range's scale, down to -1."""
    if min_tokens <= tokens <= max_tokens:
        return 0.0
    if tokens < min_tokens:
        return -min(1.0, (min_tokens - tokens) / max(1, min_tokens))
    return -min(1.0, (tokens - max_tokens) / max(1, max_tokens))


def _has(answer: str, word: str, case_sensitive: bool) -> bool:
    word = str(word).strip()
    flags = 0 if case_sensitive else re.IGNORECASE
    # whole words where the phrase starts / ends with a word character, so "cat" is not found in "concat"
    left = r"\b" if word[:1].isalnum() else ""
    right = r"\b" if word[-1:].isalnum() else ""
    return re.search(left + re.escape(word) + right, answer, flags) is not None


def score_contains(answer: str, words: list, case_sensitive: bool = False) -> float:
    """The share of ``words`` found in the answer (1.0: all of them)."""
    words = [w for w in words if str(w).strip()]
    return sum(_has(answer, w, case_sensitive) for w in words) / len(words) if words else 0.0


def score_excludes(answer: str, words: list, case_sensitive: bool = False) -> float:
    """1.0 when the answer holds none of ``words``, else 0.0."""
    return float(not any(_has(answer, w, case_sensitive) for w in words if str(w).strip()))


# ---------------------------------------------------------------- TRL reward functions


class SampleBoard:
    """The latest sampled answers with every reward's score, for the Train tab's table.

    Each reward function writes its scores here as TRL calls it; ``rows`` reads the last generation batch.
    """

    def __init__(self, reward_names: list[str], reward_weights: list[float]):
        self.names, self.weights = reward_names, reward_weights
        self.prompts: list = []
        self.answers: list[str] = []
        self.scores: dict[str, list[float]] = {}

    def record(self, name: str, prompts, completions, scores: list[float]) -> None:
        if name == self.names[0]:  # the first reward starts a new batch
            self.prompts, self.answers, self.scores = list(prompts), [text_of(c) for c in completions], {}
        self.scores[name] = [float(s) for s in scores]

    def rows(self, limit: int = 16) -> list[dict]:
        """[{prompt, answer, <reward>: score..., total}] of the latest batch (the first ``limit``)."""
        out = []
        for i, answer in enumerate(self.answers[:limit]):
            row = {"prompt": _prompt_text(self.prompts[i]), "answer": answer}
            total = 0.0
            for name, w in zip(self.names, self.weights):
                s = self.scores.get(name, [math.nan] * (i + 1))[i]
                row[name] = round(s, 4)
                total += w * s if not math.isnan(s) else 0.0
            row["total"] = round(total, 4)
            out.append(row)
        return out


def _prompt_text(prompt) -> str:
    if isinstance(prompt, list):  # the last user turn is what a person reads as the question
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1]) if users else text_of(prompt)
    return str(prompt)


def _score_one(kind: str, values: dict, answer: str, ids, column_value, count_tokens) -> float:
    if kind == "match":
        return score_match(answer, column_value, extract_re=values["extract"], mode=values["mode"],
                           tolerance=values["tolerance"])
    if kind == "format":
        return score_format(answer, values["pattern"])
    if kind == "length":
        tokens = len(ids) if ids is not None else count_tokens(answer)
        return score_length(tokens, values["min_tokens"], values["max_tokens"])
    if kind == "contains":
        return score_contains(answer, values["words"], values["case_sensitive"])
    return score_excludes(answer, values["words"], values["case_sensitive"])


def _function(item: dict, name: str, count_tokens, model_scorer, board: SampleBoard | None):
    kind = KINDS[item["kind"]]
    values = {**kind.defaults(), **{s.name: s.coerce(item[s.name]) for s in kind.settings if s.name in item}}

    def reward(prompts, completions, completion_ids=None, **columns):
        answers = [text_of(c) for c in completions]
        if kind.name == "model":
            scores = [float(s) for s in model_scorer(values["path"], prompts, completions)]
        else:
            targets = columns.get(str(values.get("column", "answer")), [None] * len(answers))
            ids = completion_ids or [None] * len(answers)
            scores = [_score_one(kind.name, values, a, i, t, count_tokens) for a, i, t in zip(answers, ids, targets)]
        if board is not None:
            board.record(name, prompts, completions, scores)
        return scores

    reward.__name__ = name  # TRL logs each reward as rewards/<its __name__>/mean
    return reward


def scorers(rewards: list[dict], count_tokens: Callable[[str], int] = lambda s: len(s.split()),
            model_scorer: Callable | None = None, board: SampleBoard | None = None) -> list[Callable]:
    """One TRL reward function per reward (``f(prompts, completions, completion_ids, **columns) -> scores``).

    Args:
        count_tokens: answer text -> tokens, where TRL passes no token ids.
        model_scorer: ``(folder, prompts, completions) -> scores`` for model rewards.
        board: where the scores of the latest batch are kept for the samples table.
    """
    return [_function(item, name, count_tokens, model_scorer, board) for item, name in zip(rewards, names(rewards))]


def chart_values(logs: dict) -> dict:
    """What GRPO logs -> the chart's names: reward (the weighted total), kl, reward_<name> per reward."""
    out = {k: logs[k] for k in ("reward", "kl") if logs.get(k) is not None}
    for key, value in logs.items():
        m = re.fullmatch(r"rewards/(.+)/mean", key)
        if m and value is not None:
            out[f"reward_{m.group(1)}"] = value
    return out
