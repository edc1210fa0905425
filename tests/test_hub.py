"""Push to the hub: a real huggingface_hub client (the CLI in a subprocess) talks to a local stand-in of the hub's
HTTP API (HF_ENDPOINT); the files and the model card arrive, the token is sent but written nowhere."""

from __future__ import annotations

import base64
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from studio.config import ConfigError
from tests.runfolders import make_run

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_studioTestToken0123456789abcdef"


class _Hub(http.server.BaseHTTPRequestHandler):
    """The endpoints create_repo and upload_folder use; every file is uploaded as a regular (non-LFS) blob."""

    repos: dict[str, dict] = {}
    auth: list[str] = []
    refuse = False

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def do_POST(self):  # noqa: N802 (the http.server name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.auth.append(self.headers.get("Authorization", ""))
        if self.refuse:
            return self._send(403, {"error": "You don't have the rights to create a model under this namespace"})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "repos", "create"]:
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            self.repos.setdefault(repo, {"visibility": req.get("visibility"), "files": {}})
            return self._send(200, {"url": f"{self._root()}/{repo}"})
        if parts[:2] == ["api", "validate-yaml"]:
            return self._send(200, {})
        if parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        if parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo = f"{parts[2]}/{parts[3]}"
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.repos[repo]["files"][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return self._send(200, {"commitUrl": f"{self._root()}/{repo}/commit/1", "commitOid": "1" * 40})
        return self._send(404, {"error": "not here"})

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    _Hub.repos, _Hub.auth, _Hub.refuse = {}, [], False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _push(args: list[str], endpoint: str, tmp_path: Path, token: str | None = TOKEN, offline: str = "0"):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT=endpoint, HF_HUB_OFFLINE=offline, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "studio", "push", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _files_with(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_push_adapter_arrives_with_card_and_no_token_on_disk(hub, tmp_path, tiny_dirs):
    run = make_run(tmp_path, tiny_dirs["llama"], "lora-run", knobs={"targets": ["all-linear"]})
    (run / "eval.jsonl").write_text(json.dumps({"prompt": "hi", "answers": {}}) + "\n" + json.dumps(
        {"summary": {"base": {"loss": 2.5, "perplexity": 12.18, "rouge_l": 0.1},
                     "tuned": {"loss": 1.25, "perplexity": 3.49, "rouge_l": 0.4}, "loss_on": "eval rows",
                     "prompts": 1}}) + "\n")
    done = _push([str(run), "--repo", "me/tiny-lora", "--private"], hub, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"{hub}/me/tiny-lora"
    repo = _Hub.repos["me/tiny-lora"]
    assert repo["visibility"] == "private"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"} <= set(repo["files"])
    card = repo["files"]["README.md"].decode()
    for want in ("base_model:", "lora", "data.path", "method.r", "## Evaluation", "| tuned | 1.25 | 3.49 | 0.4 |"):
        assert want in card, want
    assert f"Bearer {TOKEN}" in _Hub.auth  # the token was used...
    assert not _files_with(run, TOKEN)  # ...and written nowhere the studio writes
    assert not any(TOKEN.encode() in data for data in repo["files"].values())


def test_push_refused_or_offline_or_tokenless_is_one_line(hub, tmp_path, tiny_dirs):
    run = make_run(tmp_path, tiny_dirs["llama"], "lora-run")
    for kwargs, want in (({"offline": "1"}, "HF_HUB_OFFLINE"), ({"token": None}, "no hub token")):
        done = _push([str(run), "--repo", "me/x"], hub, tmp_path, **kwargs)
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr[-1500:]
        assert want in errors[0]
    _Hub.refuse = True
    done = _push([str(run), "--repo", "someone-else/x"], hub, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")] == [
        "error: the hub refused the push to someone-else/x (HTTP 403): check that the token may write there "
        "(a write token, and the user or organisation is yours)"]
    assert not _Hub.repos


def test_push_rejects_bad_names_and_formats(tmp_path, tiny_dirs, monkeypatch):
    from studio import hub

    run = make_run(tmp_path, tiny_dirs["llama"], "lora-run")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="user/name"):
        hub.push_run(run, "just-a-name")
    with pytest.raises(ConfigError, match="not a hub repository name"):
        hub.push_run(run, "me/bad name!")
    with pytest.raises(ConfigError, match="--format"):
        hub.push_run(run, "me/ok", fmt="onnx")
