"""``python -m studio COMMAND``: the headless twin of the UI.

Every command takes the same RunConfig (a preset YAML plus ``--set section.key=value``) the UI builds.
Bad input ends the command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from studio.config import ConfigError, RunConfig

__all__ = ["main", "build_parser", "load_run_config"]


def load_run_config(args: argparse.Namespace) -> RunConfig:
    """The preset named on the command line with its ``--set`` overrides applied."""
    from studio import validation  # the registry imports torch: only commands that read a config pay for it

    cfg = RunConfig.parse_yaml(RunConfig.read(args.preset), args.preset) if getattr(args, "preset", None) \
        else RunConfig()
    return validation.with_overrides(cfg, getattr(args, "set", None) or [])


def _add_config_args(p: argparse.ArgumentParser, preset_required: bool = True) -> None:
    p.add_argument("preset", nargs=None if preset_required else "?", help="a RunConfig YAML file (see presets/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override one setting, typed by the config, e.g. --set train.max_steps=20 (repeatable)")


def cmd_train(args: argparse.Namespace) -> int:
    cfg = load_run_config(args)
    from studio import headless

    if args.output:
        cfg.train.output_dir = args.output
    run_dir = headless.run_headless(cfg, quiet=args.quiet, retries=args.retry_smaller)
    print(run_dir)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from studio import chat

    for piece in chat.answer_once(args.target, args.prompt, base=args.base, max_new_tokens=args.max_new_tokens):
        print(piece, end="", flush=True)
    print()
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from studio import methods

    items = [m.to_dict() for m in methods.all_methods()]
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    for m in items:
        knobs = ", ".join(f"{k['name']}={k['default']}" for k in m["knobs"]) or "no settings"
        print(f"{m['name']:<10} {m['summary']}\n{'':<10} {knobs}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from studio import memory

    return memory.cli_estimate(load_run_config(args), gpu=args.gpu, as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from studio import export

    out = export.export_run(args.run_dir, args.out, merge=args.merge, dtype=args.dtype,
                            dequantize=getattr(args, "dequantize", False))
    print(out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from studio import evaluate

    return evaluate.cli_eval(args.run_dir, args.prompts, max_new_tokens=args.max_new_tokens)


def cmd_bench(args: argparse.Namespace) -> int:
    from studio import bench

    report = bench.bench_run(args.run_dir, args.tasks, limit=args.limit, others=args.other)
    print(report.table())
    print(f"saved {os.path.join(args.run_dir, bench.BENCH_FILE)}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from studio import evaluate, judge

    template = judge.DEFAULT_PROMPT
    if args.template:
        if not os.path.isfile(args.template):
            raise ConfigError(f"--template: no such file: {args.template}")
        with open(args.template, encoding="utf-8") as fh:
            template = fh.read()
    items = evaluate.load_prompts(args.prompts)
    report = judge.judge_run(args.run_dir, items, judge=args.judge, other=args.other, template=template,
                             max_new_tokens=args.max_new_tokens)
    print(report.table())
    print(f"saved {os.path.join(args.run_dir, judge.JUDGE_FILE)}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    return launch(load_run_config(args), args)


def launch(cfg: RunConfig, args: argparse.Namespace) -> int:
    """``python -m studio launch``: write the accelerate config, print the command, run it unless --dry-run."""
    from studio import distributed

    make = distributed.plan_launch if args.dry_run else distributed.write_launch  # a dry run writes nothing
    plan = make(cfg, args.gpus, args.nodes, args.node_rank, args.main_address,
                preset=getattr(args, "preset", None), overrides=list(getattr(args, "set", None) or []))
    if args.dry_run:
        print(f"# {plan.config_path} (not written: dry run)")
        print(plan.config_yaml.rstrip())
        print()
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    print(plan.command_line, flush=True)
    return 0 if args.dry_run else distributed.run_plan(cfg, plan)


def cmd_recommend(args: argparse.Namespace) -> int:
    from studio import recommend

    return recommend.cli_recommend(load_run_config(args).model, gpu=args.gpu, goal=args.goal)


def cmd_runs(args: argparse.Namespace) -> int:
    from studio import runs

    for run in runs.list_runs(args.root):
        print(run.summary_line())
    return 0


def cmd_combine(args: argparse.Namespace) -> int:
    from studio import combine

    print(combine.combine_runs(args.runs, args.weights, args.method, args.out, args.root, args.density, args.svd_rank))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studio", description="PEFT Studio, headless.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a preset and write a run folder (prints its path last)")
    _add_config_args(p)
    p.add_argument("--output", help="folder that holds the run folder (default: train.output_dir, runs/)")
    p.add_argument("--quiet", action="store_true", help="print only the run folder")
    p.add_argument("--retry-smaller", type=int, default=0, metavar="N",
                   help="after running out of memory, retry up to N times with half the micro-batch and twice "
                        "the accumulation (each retry is a new run folder)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("chat", help="one answer from a run's tuned model (or its base with --base)")
    p.add_argument("target", help="a run folder, a model folder, or 'embedded'")
    p.add_argument("--prompt", required=True)
    p.add_argument("--base", action="store_true", help="answer with the base model (adapter off)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("methods", help="list every fine-tuning method with its settings")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("estimate", help="VRAM breakdown and fit verdict, from the config alone")
    _add_config_args(p)
    p.add_argument("--gpu", help="plan for this GPU from the catalog (default: the one here)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("export", help="export a run's adapter, or the model merged with it")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--merge", action="store_true", help="merge into the base (LoRA family, IA3)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--dequantize", action="store_true",
                   help="merge a run trained on a 4-/8-bit base onto the full-precision base")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="answer a prompt set with base and tuned, with loss, ROUGE, BLEU...")
    p.add_argument("run_dir")
    p.add_argument("--prompts", required=True, help="a .txt (one prompt per line) or .jsonl file")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="lm-evaluation-harness tasks on the base and the tuned model, side by side")
    p.add_argument("run_dir")
    p.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                   help="shipped tasks (studio_mc, studio_gen), task .yaml files with local data, or harness names")
    p.add_argument("--limit", type=int, help="at most this many examples per task (a quick look)")
    p.add_argument("--other", action="append", default=[], metavar="RUN_DIR",
                   help="another run on the same base to score beside them (repeatable)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("judge", help="a judge model compares tuned answers with the base's (or another run's)")
    p.add_argument("run_dir")
    p.add_argument("--prompts", required=True, help="a .txt (one prompt per line) or .jsonl file")
    p.add_argument("--judge", default="base", help="'base' (the run's base, a weak judge), 'embedded' or a local model folder")
    p.add_argument("--other", metavar="RUN_DIR", help="compare against this run instead of the base")
    p.add_argument("--template", metavar="FILE", help="the judge's prompt with {question} {answer_a} {answer_b}")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.set_defaults(func=cmd_judge)

    p = sub.add_parser("launch", help="write an accelerate config and run the preset on several GPUs")
    _add_config_args(p, preset_required=False)  # no preset: the default RunConfig, written beside the launch
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--main-address", default="127.0.0.1")
    p.add_argument("--dry-run", action="store_true", help="print the config and command, run nothing")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("recommend", help="which method to try first for the preset's model, memory and goal")
    _add_config_args(p, preset_required=False)
    p.add_argument("--gpu", help="plan for this GPU from the catalog (default: the one here)")
    p.add_argument("--goal", default="style", choices=("style", "knowledge", "classification", "minimal_storage"))
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("combine", help="combine finished LoRA runs of one base into a new run (PEFT's weighted merge)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--method", default="linear", help="linear, cat, svd, ties, dare_linear, dare_ties, magnitude_prune")
    p.add_argument("--weights", default="", help="one per run, e.g. 0.6,0.4 (default: equal)")
    p.add_argument("--out", default="", metavar="NAME", help="the new run's folder name")
    p.add_argument("--root", help="folder for the new run (default: the first run's)")
    p.add_argument("--density", type=float, default=0.5, help="share of each update kept by ties, dare_*, magnitude_prune")
    p.add_argument("--svd-rank", type=int, help="rank of an svd combination (default: the largest)")
    p.set_defaults(func=cmd_combine)

    p = sub.add_parser("runs", help="list run folders")
    p.add_argument("--root", default="runs")
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an environment fault: one line, the traceback only when asked
        if os.environ.get("STUDIO_DEBUG"):
            raise
        from studio.faults import one_line  # stdlib only: works even when torch itself is what broke

        print(f"error: {one_line(err)} (set STUDIO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
