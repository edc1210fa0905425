"""Launch security: loopback by default, a password to listen elsewhere, foreign Host headers refused,
uploads size-limited, no analytics and no share link."""

from __future__ import annotations

import http.client
import os
import socket

import pytest

from studio.ui import launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_defaults_bind_loopback_without_share_or_analytics():
    kw = launch.launch_kwargs(launch.build_parser().parse_args([]))
    assert kw["server_name"] == "127.0.0.1"
    assert kw["share"] is False and kw["auth"] is None
    assert kw["max_file_size"] == launch.MAX_FILE_SIZE
    assert kw["run_history"] is False
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_other_host_needs_a_password(monkeypatch, capsys):
    monkeypatch.delenv("STUDIO_AUTH", raising=False)
    with pytest.raises(launch.LaunchError):
        launch.launch_kwargs(launch.build_parser().parse_args(["--host", "0.0.0.0"]))
    assert launch.main(["--host", "0.0.0.0", "--port", str(_free_port())]) == 2
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
    assert "evil.example" not in launch.allowed_hosts("0.0.0.0")


def _get(port: int, host_header: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/", headers={"Host": host_header})
    status = conn.getresponse().status
    conn.close()
    return status


def test_foreign_host_header_is_rejected(tiny_dirs, tmp_path):
    """DNS rebinding: a request that reached 127.0.0.1 under another name gets 400."""
    port = _free_port()
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
    port = _free_port()
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
