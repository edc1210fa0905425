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
    return cli_estimate(load_run_config(args), gpu=args.gpu, as_json=args.json)


def cli_estimate(cfg: RunConfig, gpu: str | None, as_json: bool) -> int:
    """``python -m studio estimate``: print the breakdown and the fit verdict. Returns the exit code."""
    from studio import fit, hardware, memory

    arch, source = memory.resolve_arch(cfg.model)
    device = hardware.find(gpu)
    bd = memory.estimate(arch, cfg, device="cpu" if device.kind == "cpu" else "cuda")
    verdict = fit.fit(bd, device, arch, cfg)
    if as_json:
        out = {**bd.to_dict(), "arch_source": source, "device": device.name, "device_bytes": device.total_bytes,
               "verdict": verdict.verdict, "summary": verdict.summary, "max_micro_batch": verdict.max_micro_batch,
               "max_seq_len": verdict.max_seq_len,
               "changes": [{"change": c.text, "set": c.overrides, "peak_bytes": c.peak_bytes} for c in verdict.changes]}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{cfg.model.id}: {bd.total_params / 1e9:.2f}B parameters (architecture from {source})")
    print(f"method {cfg.method.name}: {bd.trainable_params:,} trainable; micro-batch {cfg.train.micro_batch_size} "
          f"x {cfg.train.max_seq_len} tokens, {cfg.train.optimizer}, "
          f"checkpointing {'on' if cfg.train.gradient_checkpointing else 'off'}")
    for part in memory.PARTS:
        value = getattr(bd, part)
        if value:
            print(f"  {memory.LABELS[part]:<28} {memory.format_bytes(value):>10}")
    print(f"  {'peak (' + bd.peak_phase.replace('_', ' ') + ')':<28} {memory.format_bytes(bd.peak_bytes):>10}")
    for note in bd.notes:
        print(f"  note: {note}")
    print(verdict.summary)
    for c in verdict.changes:
        print(f"  - {c.text}: {memory.format_bytes(c.peak_bytes)}   (--set {' --set '.join(c.overrides)})")
    print(f"largest micro-batch that fits: {verdict.max_micro_batch or 'none'}; "
          f"largest max_seq_len: {verdict.max_seq_len or 'none'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from studio import export, gguf

    if args.format in ("gguf", "gguf-lora"):
        say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        done = (gguf.export_gguf(args.run_dir, args.out, quants=args.quant or ["f16"], dequantize=args.dequantize,
                                 say=say) if args.format == "gguf" else
                gguf.export_gguf_lora(args.run_dir, args.out, say=say))
        print(done.summary())
        return 0
    out = export.export_run(args.run_dir, args.out, merge=args.merge or args.format == "merged", dtype=args.dtype,
                            dequantize=getattr(args, "dequantize", False))
    print(out)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from studio import hub

    print(hub.push_run(args.run_dir, args.repo, private=args.private, fmt=args.format,
                       quants=args.quant or ["q8_0"], dequantize=args.dequantize))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``python -m studio eval RUN_DIR --prompts FILE``: print the side-by-side table."""
    from studio import evaluate

    report = evaluate.evaluate_run(args.run_dir, prompts_file=args.prompts, max_new_tokens=args.max_new_tokens)
    print(report.table())
    print(f"saved {evaluate.eval_path(args.run_dir)}")
    return 0


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
    """``python -m studio recommend``: a method for the model on the GPU here or ``--gpu``."""
    from studio import hardware, memory, recommend

    model = load_run_config(args).model
    arch, source = memory.resolve_arch(model)
    device = hardware.find(args.gpu)
    params = memory.parameters(arch)
    rec = recommend.recommend(params, device.total_bytes, args.goal, recommend.experts_of(arch))
    print(f"{model.id}: {params / 1e9:.2f}B parameters (architecture from {source}); "
          f"{device.name}, {device.total_bytes / 2**30:.0f} GB; goal {args.goal}: {recommend.GOALS[args.goal]}")
    print(f"try {rec.method}: {rec.reason}")
    print("  --set " + " --set ".join(rec.overrides()))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from studio import runs

    for run in runs.list_runs(args.root):
        print(run.summary_line())
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    """``python -m studio lr-find PRESET``: the range test's curve and its suggestion (nothing is saved)."""
    from studio import lr_finder

    found = lr_finder.find_lr(load_run_config(args), steps=args.steps, start=args.start, end=args.end)
    if args.json:
        print(json.dumps(found.to_dict(), indent=1))
        return 0
    for lr, loss, smooth in zip(found.lrs, found.losses, found.smoothed):
        print(f"lr {lr:9.2e}  loss {loss:8.4f}  smoothed {smooth:8.4f}")
    print(found.summary())
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``python -m studio sweep PRESET --grid KEY=V1,V2 ...``: queue every grid point, or train them in order."""
    from studio import run_queue

    cfg = load_run_config(args)
    if args.output:
        cfg.train.output_dir = args.output
    points = run_queue.grid_configs(cfg, run_queue.parse_grid(args.grid))
    if args.queue:
        queue = run_queue.RunQueue(cfg.train.output_dir)
        for point in points:
            print(f"queued {queue.add(point)['id']} {point.train.run_name}")
        return 0
    from studio import headless

    for i, point in enumerate(points, 1):
        print(f"[{i}/{len(points)}] {point.train.run_name}", file=sys.stderr, flush=True)
        print(headless.run_headless(point, quiet=args.quiet), flush=True)
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
    p.add_argument("target", help="a run folder (RUN@N: its checkpoint at step N), a model folder, or 'embedded'")
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
    p.add_argument("run_dir", help="a run folder; RUN@N: its checkpoint at step N")
    p.add_argument("--out", required=True)
    p.add_argument("--merge", action="store_true", help="merge into the base (LoRA family, IA3)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--dequantize", action="store_true",
                   help="merge a run trained on a 4-/8-bit base onto the full-precision base")
    p.add_argument("--format", default="adapter", choices=("adapter", "merged", "gguf", "gguf-lora"),
                   help="gguf: merged, for llama.cpp / Ollama / LM Studio; gguf-lora: the LoRA as a GGUF adapter "
                        "beside the base (docs/export.md)")
    p.add_argument("--quant", nargs="+", metavar="TYPE", help="GGUF types, e.g. f16 q8_0 q4_k_m (default f16)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="push a run to the hub (adapter, merged or GGUF) with its model card")
    p.add_argument("run_dir", help="a run folder; RUN@N: its checkpoint at step N")
    p.add_argument("--repo", required=True, help="user/name on the hub (created when missing)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--format", default="adapter", choices=("adapter", "merged", "gguf"))
    p.add_argument("--quant", nargs="+", metavar="TYPE", help="GGUF types for --format gguf (default q8_0)")
    p.add_argument("--dequantize", action="store_true",
                   help="merge a run trained on a 4-/8-bit base onto the full-precision base")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("eval", help="answer a prompt set with base and tuned, with loss, ROUGE, BLEU...")
    p.add_argument("run_dir", help="a run folder; RUN@N: its checkpoint at step N")
    p.add_argument("--prompts", required=True, help="a .txt (one prompt per line, 'prompt => reference' to score against it) or .jsonl file")
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
    p.add_argument("--prompts", required=True, help="a .txt (one prompt per line, 'prompt => reference' to score against it) or .jsonl file")
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

    p = sub.add_parser("lr-find", help="a short learning-rate range test; suggests train.learning_rate")
    _add_config_args(p)
    p.add_argument("--steps", type=int, default=40, help="optimizer steps, one batch each")
    p.add_argument("--start", type=float, default=1e-6, help="first learning rate")
    p.add_argument("--end", type=float, default=1e-1, help="last learning rate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("sweep", help="one run per point of a settings grid, trained in order (or queued)")
    _add_config_args(p)
    p.add_argument("--grid", action="append", required=True, metavar="SECTION.KEY=V1,V2",
                   help="values to try for one setting (repeatable: every combination runs)")
    p.add_argument("--queue", action="store_true", help="add the runs to the studio's queue instead of training")
    p.add_argument("--output", help="runs folder (default: train.output_dir)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)

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
