"""UI load: training throughput with ten pages polling the run, and with two people chatting as well, against
the same run with nobody watching.

The studio runs as its own server process (``python app.py``), as a person would start it; this script is
only its visitors. The CPU this runs on changes speed from one minute to the next (shared cores), by more
than the load costs, so "alone" and "watched" are not two runs one after the other: one run trains in
blocks of ``--block`` steps, and the visitors are on in every other block and away in the others (a page
whose tab is hidden does not tick). The first block is warm-up; the first step of every block is left out
(it straddles the switch). Two runs:

1. polling: ten pages tick the Train tab as often as the tick tells their gr.Timer to (about once a step),
   each with the page's own request (the timer's tick through /gradio_api/queue/join and its SSE stream);
2. polling + chat: the same ten pages and two people on the Chat tab with a finished run picked
   (gradio_client on /chat): a message, the reply, think time, the next one. While a run trains the
   studio does not generate beside it: the reply is the note that the model is in use, so this part
   measures what the chat requests cost the run.

Tokens/s is the real (packed) tokens of the counted steps over their time, from the run's metrics.jsonl.
Poll time is the round trip of one tick as a page sees it.

    python benchmarks/ui_load.py                  # the embedded SmolLM2-135M, 45 steps per run, blocks of 5
    python benchmarks/ui_load.py --chats 0        # the polling run only
    python benchmarks/ui_load.py --chats 0 --fixed  # pages tick every second, as before the tick set the timer
    python benchmarks/ui_load.py --block 4 --steps 60 --think 10
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
TIMER_OUTPUT = 6  # the tick's outputs: the page's key, progress, stats, chart, log, result, timer, retry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_dataset(path: Path, rows: int) -> Path:
    """Chat rows of varied length about the studio's own words (no download)."""
    words = ("the model learns a small adapter beside frozen weights so memory stays low and training is quick "
             "rank alpha dropout target modules learning rate warmup schedule batch tokens loss").split()
    out = []
    for i in range(rows):
        q = " ".join(words[(i + k) % len(words)] for k in range(8 + i % 12))
        a = " ".join(words[(3 * i + k) % len(words)] for k in range(30 + (7 * i) % 60))
        out.append({"messages": [{"role": "user", "content": q + "?"}, {"role": "assistant", "content": a + "."}]})
    path.write_text("\n".join(json.dumps(r) for r in out), encoding="utf-8")
    return path


def run_config(args, data: Path, name: str, steps: int) -> dict:
    return {"model": {"id": args.model}, "method": {"name": "lora", "r": 8, "targets": ["q_proj", "v_proj"]},
            "data": {"path": str(data), "packing": True},
            "train": {"max_steps": steps, "micro_batch_size": args.batch, "max_seq_len": args.seq_len,
                      "logging_steps": 1, "save_steps": 1000, "run_name": name, "precision": "auto"}}


class Server:
    """``python app.py`` on a free port with its own runs folder; stopped (by its pid) on exit."""

    def __init__(self, args, runs_root: Path, allow: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(self.port), "--model", args.model,
               "--runs", str(runs_root), "--allow-dir", str(allow)]
        self.log = open(runs_root.parent / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "config", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"the studio did not start; see {self.log.name}")
            time.sleep(1)
        raise SystemExit("the studio did not answer within 300 s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def tick_endpoint(url: str) -> tuple[int, int]:
    """(fn_index, trigger_id) of the Train tab's timer tick, from the page's config."""
    config = httpx.get(url + "config", timeout=30).json()
    timers = {c["id"] for c in config["components"] if c.get("type") == "timer"}
    for index, dep in enumerate(config["dependencies"]):
        for target, event in dep.get("targets", []):
            if target in timers and event == "tick":
                return dep.get("id", index), target
    raise SystemExit("no timer tick in the page's config")


def poll_once(http: httpx.Client, url: str, fn_index: int, trigger_id: int, session: str) -> list:
    # the page's one input is its gr.State (what it shows), which the browser sends as null
    body = {"data": [None], "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id, "session_hash": session}
    event_id = http.post(url + "gradio_api/queue/join", json=body).raise_for_status().json()["event_id"]
    with http.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                    return msg["output"].get("data") or []
    raise RuntimeError("the stream ended without the tick's result")


def poller(url: str, endpoint: tuple[int, int], interval: float, on: threading.Event, stop: threading.Event,
           times: list, fixed: bool = False) -> None:
    """One open page on the Train tab: while ``on``, a tick every ``interval`` seconds, until ``stop``.

    As the page's gr.Timer does (a setInterval that starts again whenever its value changes): a tick that
    sends the timer a new interval sets the next tick that long after its answer arrived (unless ``fixed``).
    While ``on`` is clear the page is as a hidden tab: no ticks.
    """
    session = uuid.uuid4().hex[:11]
    with httpx.Client(timeout=120) as http:
        due = time.perf_counter()
        while not stop.wait(max(0.0, due - time.perf_counter())):
            if not on.is_set():
                due = time.perf_counter() + 0.2
                continue
            t0 = time.perf_counter()
            data = poll_once(http, url, *endpoint, session)
            now = time.perf_counter()
            times.append(now - t0)
            sent = data[TIMER_OUTPUT] if len(data) > TIMER_OUTPUT and not fixed else None
            if isinstance(sent, (int, float)) and float(sent) != interval:
                interval, due = float(sent), now + float(sent)
            else:
                due = max(due + interval, now)


def chatter(url: str, run_dir: str, model: str, think: float, tokens: int, on: threading.Event,
            stop: threading.Event, log: list) -> None:
    """One person on the Chat tab: while ``on``, a message, the reply, think time, again; until ``stop``."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    i = 0
    while not stop.is_set():
        if not on.wait(0.2):
            continue
        t0 = time.perf_counter()
        client.predict(f"Question {i}: what does the adapter rank change?", [], [], run_dir, model,
                       tokens, 0.7, 0.9, 50, 1.1, False, api_name="/chat")
        log.append(time.perf_counter() - t0)
        i += 1
        stop.wait(think)


def start_run(url: str, cfg: dict) -> None:
    from gradio_client import Client

    message = Client(url, verbose=False).predict(yaml.safe_dump(cfg), api_name="/start_yaml")
    if "Started" not in message:
        raise SystemExit(f"could not start the run: {message}")


def _visitors_on(block: int, step: int) -> bool:
    """Whether the visitors are there while step ``step + 1`` trains: block 0 (warm-up) and every even one away."""
    return (step // block) % 2 == 1


def follow(run_dir: Path, block: int, on: threading.Event, timeout: float = 1800) -> dict:
    """Switch the visitors on and off at the block edges as the run's steps land in metrics.jsonl (no request to
    the server); the run's final state."""
    from studio import runs

    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [r for r in runs.read_metrics(run_dir) if "step" in r]
        step = rows[-1]["step"] if rows else 0
        on.set() if _visitors_on(block, step) else on.clear()
        state = runs.read_state(run_dir)
        if state.get("status") in ("done", "stopped", "failed"):
            on.clear()
            return state
        time.sleep(0.2)
    raise SystemExit(f"{run_dir.name} did not finish within {timeout:.0f} s")


def split_rates(run_dir: Path, block: int) -> dict[str, tuple[float, int]]:
    """{"away"|"there": (tokens/s, steps counted)} over the counted steps (not block 0, not a block's first)."""
    from studio import runs

    rows = [r for r in runs.read_metrics(run_dir) if "tokens" in r and "time" in r and "step" in r]
    sums = {"away": [0.0, 0.0, 0], "there": [0.0, 0.0, 0]}
    for prev, row in zip(rows, rows[1:]):
        if row["step"] != prev["step"] + 1 or prev["step"] < block or prev["step"] % block == 0:
            continue  # warm-up, or the first step of a block (the visitors were switched during it)
        part = sums["there" if _visitors_on(block, prev["step"]) else "away"]
        part[0] += row["tokens"] - prev["tokens"]
        part[1] += row["time"] - prev["time"]
        part[2] += 1
    return {k: (tokens / seconds if seconds else float("nan"), n) for k, (tokens, seconds, n) in sums.items()}


def measure(args, url: str, data: Path, runs_root: Path, name: str, pages: int, chats: int,
            chat_run: Path) -> dict:
    """Train one run with ``pages`` pollers and ``chats`` chatters there in every other block."""
    on, stop, poll_times, chat_times, threads = threading.Event(), threading.Event(), [], [], []
    endpoint = tick_endpoint(url)
    for _ in range(pages):
        threads.append(threading.Thread(target=poller, args=(url, endpoint, args.interval, on, stop, poll_times,
                                                               args.fixed)))
    for _ in range(chats):
        threads.append(threading.Thread(target=chatter, args=(url, str(chat_run), args.model, args.think,
                                                              args.chat_tokens, on, stop, chat_times)))
    for t in threads:
        t.start()
    start_run(url, run_config(args, data, name, args.steps))
    state = follow(runs_root / name, args.block, on)
    stop.set()
    for t in threads:
        t.join(300)
    return {"name": name, "status": state["status"], "rates": split_rates(runs_root / name, args.block),
            "poll_times": poll_times, "chat_times": chat_times}


def _ms(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    p95 = statistics.quantiles(values, n=20)[-1]
    return f"median {statistics.median(values) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms ({len(values)} ticks)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded", help="model.id for the runs and the chat (default: embedded)")
    p.add_argument("--steps", type=int, default=45, help="optimizer steps per run")
    p.add_argument("--block", type=int, default=5, help="steps per block; the visitors are there every other block")
    p.add_argument("--batch", type=int, default=2, help="micro-batch (packed rows of --seq-len)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--pages", type=int, default=10, help="pages polling the Train tab")
    p.add_argument("--chats", type=int, default=2, help="people chatting (0: leave out the second run)")
    p.add_argument("--interval", type=float, default=1.0, help="the page's first tick interval (gr.Timer), seconds")
    p.add_argument("--fixed", action="store_true",
                   help="pages tick every --interval seconds whatever the tick sends (how pages polled before)")
    p.add_argument("--think", type=float, default=10.0, help="seconds a chatter waits between messages")
    p.add_argument("--chat-tokens", type=int, default=64, help="max new tokens per answer")
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="ui-load-") as tmp:
        tmp = Path(tmp)
        runs_root = tmp / "runs"
        data = make_dataset(tmp / "chat.jsonl", 200)
        # the run the chatters pick: finished before the studio starts, so its Chat tab lists it
        cfg_path = tmp / "picked.yaml"
        cfg_path.write_text(yaml.safe_dump(run_config(args, data, "picked", 2)))
        subprocess.run([sys.executable, "-m", "studio", "train", str(cfg_path), "--output", str(runs_root),
                        "--quiet"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        server = Server(args, runs_root, tmp)
        picked = runs_root / "picked"
        try:
            results = [measure(args, server.url, data, runs_root, "polling", args.pages, 0, picked)]
            if args.chats:
                results.append(measure(args, server.url, data, runs_root, "polling-chat", args.pages, args.chats,
                                       picked))
        finally:
            server.close()
    _print(args, results)
    return 0


def _print(args, results: list[dict]) -> None:
    print(f"model {args.model}, LoRA r8 q/v, {args.steps} steps of {args.batch} x {args.seq_len} packed tokens, "
          f"visitors there every other block of {args.block} steps; {os.cpu_count()} CPU cores; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in results:
        (away, n_away), (there, n_there) = r["rates"]["away"], r["rates"]["there"]
        print(f"{r['name']:<13} nobody there {away:7.1f} tokens/s ({n_away} steps), visitors there {there:7.1f} "
              f"tokens/s ({n_there} steps): drop {100 * (1 - there / away):5.1f}%  status {r['status']}")
        if r["poll_times"]:
            print(f"{'':<14}poll per tick: {_ms(r['poll_times'])}")
        if r["chat_times"]:
            print(f"{'':<14}chat: {len(r['chat_times'])} replies, median {statistics.median(r['chat_times']):.1f} s "
                  f"each (think time {args.think:.0f} s)")

if __name__ == "__main__":
    sys.exit(main())
