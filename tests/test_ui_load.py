"""Load on the real studio server: ten pages polling the Train tab and two people chatting while a run trains.

The pollers speak the page's own protocol (the gr.Timer tick through /gradio_api/queue/join and the
SSE stream), the chatters use gradio_client on the public /chat endpoint with a finished run picked: while
the run trains they are told so (nothing is loaded beside it), and once it has ended they get answers.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
import uuid

import httpx
import pytest
import yaml

from studio import headless, runs, training
from studio.config import RunConfig
from studio.ui import launch
from conftest import free_port, write_chat_rows

POLLERS, CHATTERS, STEPS = 10, 2, 40
_LABEL = re.compile(r"id='train-progress-label'>(\w+) · step (\d+)/(\d+|\?)")


def tick_endpoint(base_url: str) -> tuple[int, int]:
    """(fn_index, trigger_id) of the Train tab's timer tick, read from the page's config as the page does."""
    config = httpx.get(base_url + "config", timeout=30).json()
    timers = {c["id"] for c in config["components"] if c.get("type") == "timer"}
    for index, dep in enumerate(config["dependencies"]):
        for target, event in dep.get("targets", []):
            if target in timers and event == "tick":
                return dep.get("id", index), target
    raise AssertionError("no timer tick in the page's config")


def poll_once(http: httpx.Client, base_url: str, fn_index: int, trigger_id: int, session: str) -> list:
    """One tick as the browser sends it: join the queue, then read the SSE stream until the result arrives."""
    # the page's one input is its gr.State (what it shows), which the browser sends as null
    body = {"data": [None], "event_data": None, "fn_index": fn_index, "trigger_id": trigger_id, "session_hash": session}
    event_id = http.post(base_url + "gradio_api/queue/join", json=body).raise_for_status().json()["event_id"]
    with http.stream("GET", base_url + "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                assert msg.get("success"), msg
                return msg["output"]["data"]
    raise AssertionError("the stream ended without the tick's result")


class Poller(threading.Thread):
    """One open page: ticks every ``interval`` seconds until the run has ended; records (state, step) and times."""

    def __init__(self, base_url: str, endpoint: tuple[int, int], interval: float = 1.0, deadline: float = 300):
        super().__init__(daemon=True)
        self.base_url, self.endpoint, self.interval = base_url, endpoint, interval
        self.deadline = time.time() + deadline
        self.seen: list[tuple[str, int, str]] = []
        self.seconds: list[float] = []
        self.skipped = 0  # ticks that found nothing new to send
        self.error: BaseException | None = None
        self.stop_flag = threading.Event()

    def run(self) -> None:
        session = uuid.uuid4().hex[:11]
        try:
            with httpx.Client(timeout=60) as http:
                while time.time() < self.deadline and not self.stop_flag.is_set():
                    t0 = time.perf_counter()
                    data = poll_once(http, self.base_url, *self.endpoint, session)
                    self.seconds.append(time.perf_counter() - t0)
                    progress = data[1]  # after the page's key; a dict (a skipped part) when nothing changed
                    if not isinstance(progress, str):
                        self.skipped += 1
                        progress = ""
                    found = _LABEL.search(progress)
                    if found:
                        self.seen.append((found[1], int(found[2]), found[3]))
                        if found[1] in ("done", "stopped", "failed"):
                            return
                    self.stop_flag.wait(max(0.0, self.interval - (time.perf_counter() - t0)))
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err


def _training() -> bool:
    job = training.current_job()
    return job is not None and job.snapshot().get("state") in ("queued", "loading", "training", "saving")


class Chatter(threading.Thread):
    """One person chatting with the picked run while another trains: a message, the reply, some think time, again.

    Goes on until it has had an answer after the run ended. Each reply is kept as (sent and received while
    the run trained, note, base answer, tuned answer).
    """

    def __init__(self, client, run_dir: str, model_id: str, think: float = 1.0, deadline: float = 300):
        super().__init__(daemon=True)
        self.client, self.run_dir, self.model_id, self.think = client, run_dir, model_id, think
        self.deadline = time.time() + deadline
        self.replies: list[tuple[bool, str, str, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from studio.ui.chat_tab import flatten

        try:
            i = 0
            while time.time() < self.deadline:
                during = _training()
                base, tuned, note, *_ = self.client.predict(
                    f"hello {i}, what is a rank?", [], [], self.run_dir, self.model_id, 24, 0.7, 0.9, 50, 1.1, True,
                    api_name="/chat")
                answers = [flatten(h[-1]["content"]) if h else "" for h in (base, tuned)]
                self.replies.append((during and _training(), note, *answers))
                if not during and all(answers):
                    return
                i += 1
                time.sleep(self.think)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err


@pytest.fixture
def chat_data(tmp_path):
    return write_chat_rows(tmp_path / "chat.jsonl", 32)


def _cfg(model: str, data: str, **train) -> dict:
    return {"model": {"id": model}, "method": {"name": "lora", "r": 4},
            "data": {"path": data, "packing": False},
            "train": {"micro_batch_size": 2, "max_seq_len": 128, "precision": "fp32", "logging_steps": 1, **train}}


def test_ten_pollers_and_two_chats_while_a_run_trains(tiny_dirs, chat_data, tmp_path):
    model = str(tiny_dirs["llama"])
    root = tmp_path / "runs"
    # a finished run to chat with, there before the studio starts (the chat tab lists it)
    picked = headless.run_headless(RunConfig.from_dict(
        _cfg(model, str(chat_data), max_steps=2, run_name="picked", output_dir=str(root))), quiet=True)
    port = free_port()
    demo = launch.main(["--port", str(port), "--model", model, "--runs", str(root)], prevent_thread_lock=True)
    base_url = f"http://127.0.0.1:{port}/"
    pollers: list[Poller] = []
    try:
        from gradio_client import Client

        endpoint = tick_endpoint(base_url)
        # the chatters' clients are connected first, so their first message goes while the run is starting
        chatters = [Chatter(Client(base_url, verbose=False), str(picked), model) for _ in range(CHATTERS)]
        started = Client(base_url, verbose=False).predict(
            yaml.safe_dump(_cfg(model, str(chat_data), max_steps=STEPS, run_name="watched")), api_name="/start_yaml")
        assert "Started" in started, started
        pollers = [Poller(base_url, endpoint) for _ in range(POLLERS)]
        for worker in chatters + pollers:
            worker.start()
        for worker in pollers + chatters:
            worker.join(320)
        job = training.current_job()
        assert job is not None and job.wait(60)
    finally:
        for poller in pollers:
            poller.stop_flag.set()
        demo.close()

    for poller in pollers:
        assert poller.error is None, repr(poller.error)
        steps = [step for _, step, _ in poller.seen]
        assert steps == sorted(steps), steps
        assert len(set(steps)) >= 3, f"a page saw too little of the run: {poller.seen}"
        assert poller.seen[-1][0] == "done" and steps[-1] == STEPS, poller.seen[-3:]
    for chatter in chatters:
        assert chatter.error is None, repr(chatter.error)
        for during, note, base, tuned in chatter.replies:
            if during:  # the run was using the model from before the message until after the reply
                assert note.startswith("**Not sent:**") and base == tuned == "", (note, base, tuned)
        assert chatter.replies[-1][2] and chatter.replies[-1][3], "no answer once the run had ended"
    assert any(during for chatter in chatters for during, *_ in chatter.replies), "no message went during the run"
    state = runs.read_state(root / "watched")
    assert state["status"] == "done" and state["step"] == STEPS
    assert [r["step"] for r in runs.read_metrics(root / "watched")] == list(range(1, STEPS + 1))
    ticks = [s for poller in pollers for s in poller.seconds]
    median, p95 = statistics.median(ticks), statistics.quantiles(ticks, n=20)[-1]
    print(f"\n{len(ticks)} ticks from {POLLERS} pages: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    assert median < 1.0, "a tick takes longer than the page's tick interval"
