"""The studio's API through gradio_client: start a short run and follow its status to the end."""

from __future__ import annotations

import time

import yaml



def test_start_training_and_read_status(studio_url, tiny_dirs, tmp_path):
    from gradio_client import Client

    client = Client(studio_url, verbose=False)
    assert client.predict(api_name="/status")["state"] in ("idle", "done", "failed", "stopped")
    cfg = {"model": {"id": str(tiny_dirs["llama"])}, "method": {"name": "lora", "r": 4},
           "train": {"max_steps": 3, "micro_batch_size": 2, "max_seq_len": 128, "run_name": "api-run",
                     "output_dir": "/tmp/elsewhere"}}
    message = client.predict(yaml.safe_dump(cfg), api_name="/start_yaml")
    assert "Started" in message, message
    deadline, snap = time.time() + 240, {}
    while time.time() < deadline:
        snap = client.predict(api_name="/status")
        if snap["state"] in ("done", "failed", "stopped"):
            break
        time.sleep(1)
    assert snap["state"] == "done", snap
    assert snap["step"] == 3
    # the run went to the studio's runs folder, not where the config asked
    assert (tmp_path / "runs" / "api-run" / "adapter").is_dir()
    refusal = client.predict("model: [", api_name="/start_yaml")
    assert "Cannot start" in refusal
