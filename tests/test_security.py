"""Launch security: loopback by default, a password to listen elsewhere, foreign Host headers refused,
uploads size-limited, no analytics and no share link; paths typed in the browser read only under allowed
folders, and Gradio's file route serves uploads only."""

from __future__ import annotations

import http.client
import os
import socket
from pathlib import Path

import pytest

from studio.config import RunConfig
from studio.ui import launch
from conftest import free_port


def test_defaults_bind_loopback_without_share_or_analytics():
    kw = launch.launch_kwargs(launch.build_parser().parse_args([]))
    assert kw["server_name"] == "127.0.0.1"
    assert kw["share"] is False and kw["auth"] is None
    assert kw["max_file_size"] == launch.MAX_FILE_SIZE
    assert kw["run_history"] is False
    assert kw["enable_monitoring"] is False and kw["mcp_server"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_other_host_needs_a_password(monkeypatch, capsys):
    monkeypatch.delenv("STUDIO_AUTH", raising=False)
    with pytest.raises(launch.LaunchError):
        launch.launch_kwargs(launch.build_parser().parse_args(["--host", "0.0.0.0"]))
    assert launch.main(["--host", "0.0.0.0", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--auth" in err


def test_password_from_flag_or_environment(monkeypatch):
    args = launch.build_parser().parse_args(["--host", "0.0.0.0", "--auth", "ann:s3cret"])
    assert launch.launch_kwargs(args)["auth"] == ("ann", "s3cret")
    monkeypatch.setenv("STUDIO_AUTH", "bob:pw")
    args = launch.build_parser().parse_args(["--host", "0.0.0.0"])
    assert launch.launch_kwargs(args)["auth"] == ("bob", "pw")
    with pytest.raises(launch.LaunchError):
        launch.parse_auth("no-colon")


def test_allowed_hosts():
    assert launch.allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost"]
    assert "192.168.1.5" in launch.allowed_hosts("192.168.1.5")
    everywhere = launch.allowed_hosts("0.0.0.0")
    assert "evil.example" not in everywhere
    # on every address the machine also answers to its own name and addresses
    assert {socket.gethostname(), socket.getfqdn(), "127.0.0.1", "localhost"} <= set(everywhere)
    try:
        assert set(socket.gethostbyname_ex(socket.gethostname())[2]) <= set(everywhere)
    except OSError:  # a host name that does not resolve adds no address
        pass


def _get(port: int, host_header: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/", headers={"Host": host_header})
    status = conn.getresponse().status
    conn.close()
    return status


def test_foreign_host_header_is_rejected(tiny_dirs, tmp_path):
    """DNS rebinding: a request that reached 127.0.0.1 under another name gets 400."""
    port = free_port()
    demo = launch.main(["--port", str(port), "--model", str(tiny_dirs["llama"]), "--runs", str(tmp_path)],
                       prevent_thread_lock=True)
    try:
        assert _get(port, f"127.0.0.1:{port}") == 200
        assert _get(port, f"localhost:{port}") == 200
        assert _get(port, f"evil.example:{port}") == 400
        assert _get(port, "attacker.test") == 400
    finally:
        demo.close()


def test_upload_size_limit_is_enforced(tiny_dirs, tmp_path, monkeypatch):
    """An upload over the limit is refused before it is stored."""
    monkeypatch.setattr(launch, "MAX_FILE_SIZE", "1kb")
    port = free_port()
    demo = launch.main(["--port", str(port), "--model", str(tiny_dirs["llama"]), "--runs", str(tmp_path)],
                       prevent_thread_lock=True)
    try:
        body = b"x" * 4096
        boundary = "studio-test-boundary"
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.jsonl\"\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/gradio_api/upload", body=payload,
                     headers={"Host": f"127.0.0.1:{port}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
        resp = conn.getresponse()
        assert resp.status == 413, resp.read()[:200]
        conn.close()
    finally:
        demo.close()


# ---- paths typed in the browser ----------------------------------------------------------------------------

REFUSED = "is outside the folders the studio may read"


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """Only the studio's own folders are allowed (pytest's tmp is not); the runs folder is tmp_path/runs."""
    from studio.ui import paths, state

    monkeypatch.delenv(paths.ENV, raising=False)
    monkeypatch.setattr(state.get(), "default_model", "embedded")
    monkeypatch.setattr(state.get(), "runs_root", tmp_path / "runs")
    monkeypatch.setattr(paths, "_extra", [])
    (tmp_path / "runs").mkdir()
    return tmp_path / "runs"


def _chat_file(path):
    import json

    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    return path


def _form_values(form, **settings):
    values = [c.value for c in form.components]
    for key, value in settings.items():
        values[form.index(key.replace("__", "."))] = value
    return values


@pytest.fixture
def ui_form(locked, tiny_dirs):
    """The app's Form, built as `python app.py` builds it (the default model is the embedded one)."""
    from studio.ui import state
    from studio.ui.app import build_app

    build_app(default_model="embedded", runs_root=str(locked))
    return state.get().form


def test_typed_path_outside_is_refused_by_every_handler(locked, tiny_dirs, tmp_path, ui_form):
    from studio.config import ConfigError
    from studio.ui import chat_tab, data_tab, eval_panel, method_tab, model_tab, train_tab

    outside = str(tiny_dirs["gpt2"])
    card = model_tab.arch_card(outside)
    assert REFUSED in card and "--allow-dir" in card and "gpt2" not in card.split(REFUSED)[1]
    # the gpt2 folder is never read: its own module names (c_attn) do not appear
    assert "c_attn" not in method_tab.target_choices(outside)
    with pytest.raises(ConfigError) as err:
        ui_form.to_config(*_form_values(ui_form, model__id=outside, data__path="/etc/passwd"))
    assert len(err.value.problems) == 2 and all(REFUSED in p for p in err.value.problems)
    columns, *_ = data_tab.inspect_source(str(_chat_file(tmp_path / "outside.jsonl")))
    assert REFUSED in columns and "messages" not in columns.split(REFUSED)[0]
    cfg = RunConfig.from_dict({"model": {"id": outside}, "data": {"path": str(tmp_path / "outside.jsonl")},
                               "train": {"max_steps": 1}})
    assert REFUSED in data_tab.preview_view(cfg)[0]
    assert REFUSED in train_tab.start_training(cfg)
    assert not any(locked.iterdir()), "a refused run still made a run folder"
    assert "not a run in the runs folder" in train_tab.resume_training(str(tmp_path))
    *_, (_, _, note, *_) = chat_tab.chat_stream("hi", [], [], str(tmp_path), "embedded")
    assert "not a run in the runs folder" in note
    *_, (_, _, note, *_) = chat_tab.chat_stream("hi", [], [], None, outside)
    assert REFUSED in note
    assert "not a run in the runs folder" in eval_panel.evaluate_prompts("hi", False, str(tmp_path), "embedded")[1]


def test_dotdot_and_symlinks_do_not_lead_out(locked, tiny_dirs, tmp_path):
    from studio.ui import model_tab, paths

    outside_file = _chat_file(tmp_path / "outside.jsonl")
    with pytest.raises(paths.PathRefused):
        paths.check(f"{locked}/../outside.jsonl", "data.path")
    with pytest.raises(paths.PathRefused):
        paths.check(f"{locked}/x/../../outside.jsonl", "data.path")
    (locked / "link.jsonl").symlink_to(outside_file)
    (locked / "model-link").symlink_to(tiny_dirs["llama"])
    with pytest.raises(paths.PathRefused):
        paths.check(str(locked / "link.jsonl"), "data.path")
    assert REFUSED in model_tab.arch_card(str(locked / "model-link"))
    # a symlink whose target lies in an allowed folder is fine
    inside = _chat_file(locked / "inside.jsonl")
    (locked / "alias.jsonl").symlink_to(inside)
    assert paths.check(str(locked / "alias.jsonl"), "data.path") == str(locked / "alias.jsonl")


def test_hub_ids_stay_allowed_unless_they_name_a_folder_here(locked, tiny_dirs, tmp_path, monkeypatch):
    import shutil

    from studio.ui import model_tab, paths

    assert paths.check_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert paths.check("tatsu-lab/alpaca", "data.path") == "tatsu-lab/alpaca"
    assert REFUSED not in model_tab.arch_card("HuggingFaceTB/SmolLM2-135M-Instruct")
    # the same shape naming a folder in the working directory is a path, and that folder is outside
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_dirs["llama"], tmp_path / "org" / "name")
    assert REFUSED in model_tab.arch_card("org/name")
    with pytest.raises(paths.PathRefused):
        paths.check("notes.jsonl", "data.path")  # a file name is local even when it does not exist


def test_allowed_folders_work(locked, tiny_dirs, tmp_path, monkeypatch, ui_form):
    import shutil

    from studio.ui import data_tab, model_tab, paths

    shutil.copytree(tiny_dirs["llama"], locked / "model")
    assert "| layers | 2 |" in model_tab.arch_card(str(locked / "model"))
    data = _chat_file(locked / "data.jsonl")
    cfg = ui_form.to_config(*_form_values(ui_form, model__id=str(locked / "model"), data__path=str(data)))
    assert cfg.data.path == str(data)
    assert paths.check("presets/data/identity.jsonl", "data.path")
    # an upload: Gradio stores it in its temp folder, which the data tab then reads
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    (tmp_path / "uploads" / "3f2a").mkdir(parents=True)
    upload = str(_chat_file(tmp_path / "uploads" / "3f2a" / "mine.jsonl"))
    assert "**Detected format:** chat" in data_tab.inspect_source(upload)[0]
    # STUDIO_ALLOWED_DIRS: several folders separated by os.pathsep
    monkeypatch.setenv(paths.ENV, os.pathsep.join([str(tmp_path / "nothing"), str(tiny_dirs["gpt2"].parent)]))
    assert "| layers | 2 |" in model_tab.arch_card(str(tiny_dirs["gpt2"]))


def test_the_launch_model_and_the_hub_caches_are_allowed(locked, tiny_dirs, tmp_path, monkeypatch):
    from studio.ui import model_tab, paths, state

    assert REFUSED in model_tab.arch_card(str(tiny_dirs["llama"]))
    monkeypatch.setattr(state.get(), "default_model", str(tiny_dirs["llama"]))  # python app.py --model FOLDER
    assert "| layers | 2 |" in model_tab.arch_card(str(tiny_dirs["llama"]))
    assert REFUSED in model_tab.arch_card(str(tiny_dirs["gpt2"]))  # only that folder, not its neighbours
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        cache = tmp_path / name.lower()
        cache.mkdir()
        data = _chat_file(cache / "d.jsonl")
        with pytest.raises(paths.PathRefused):
            paths.check(str(data), "data.path")
        monkeypatch.setenv(name, str(cache))
        assert paths.check(str(data), "data.path") == str(data)


def test_allow_dir_flag_adds_a_folder_and_gradio_serves_uploads_only(locked, tiny_dirs, tmp_path):
    from studio.ui import method_tab, model_tab, paths

    secret = locked / "secret.txt"
    secret.write_text("run data")
    args = launch.build_parser().parse_args(["--runs", str(locked), "--allow-dir", str(tiny_dirs["gpt2"].parent)])
    kw = launch.launch_kwargs(args)
    assert kw["allowed_paths"] == [] and str(locked.resolve()) in kw["blocked_paths"]
    assert REFUSED in model_tab.arch_card(str(tiny_dirs["gpt2"]))
    port = free_port()
    demo = launch.main(["--port", str(port), "--runs", str(locked), "--allow-dir", str(tiny_dirs["gpt2"].parent)],
                       prevent_thread_lock=True)
    try:
        assert "c_attn" in method_tab.target_choices(str(tiny_dirs["gpt2"]))
        assert tiny_dirs["gpt2"].parent.resolve() in paths.allowed_dirs()
        uploaded = _upload(port, b'{"text": "hi"}\n')
        assert _get_path(port, f"/gradio_api/file={uploaded}") == 200
        for path in (secret, Path.cwd() / "pyproject.toml", tiny_dirs["gpt2"] / "config.json"):
            assert _get_path(port, f"/gradio_api/file={path}") == 403, path
    finally:
        demo.close()
        paths.set_extra([])


def _upload(port: int, body: bytes) -> str:
    import json

    boundary = "studio-test-boundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"d.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/gradio_api/upload", body=payload,
                 headers={"Host": f"127.0.0.1:{port}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    resp = conn.getresponse()
    assert resp.status == 200
    return json.loads(resp.read())[0]


def _get_path(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_runs_tab_reads_only_run_folders(locked, tmp_path):
    import json

    from studio.ui import runs_tab

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.5}) + "\n")
    chart = runs_tab.overlay(["../elsewhere"])
    assert all(len(trace.x or ()) == 0 for trace in chart.data), "read a metrics file outside the runs folder"
    assert f"{locked}/elsewhere/config.yaml" in runs_tab.run_yaml("../elsewhere")  # looked in the runs folder
