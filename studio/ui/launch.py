"""Launch the studio with safe defaults.

- Binds 127.0.0.1. Listening anywhere else needs ``--host`` and a password (``--auth user:pass`` or the
  STUDIO_AUTH environment variable); without one the studio refuses to start.
- Requests whose Host header is not this machine are rejected (DNS rebinding): a page on another site
  that points its own name at 127.0.0.1 still cannot talk to the studio.
- Uploads are size-limited, Gradio's analytics are off and no share link is made.
- A path typed in the browser is read only under an allowed folder (studio.ui.paths); ``--allow-dir DIR``
  adds one. Gradio's file route serves uploads only: no allowed_paths, and the studio's folders blocked.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

# Gradio reads this at import time: set it before anything imports gradio.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["main", "build_parser", "launch_kwargs", "allowed_hosts", "parse_auth", "LOOPBACK", "MAX_FILE_SIZE"]

LOOPBACK = ("127.0.0.1", "localhost")
MAX_FILE_SIZE = "200mb"


class LaunchError(SystemExit):
    """A refusal to start, with the one line that says why."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:password' -> (user, password); None or empty -> None; anything else is refused."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise LaunchError("error: --auth / STUDIO_AUTH must be user:password (both non-empty)")
    return user, password


def allowed_hosts(host: str, extra: list[str] | None = None) -> list[str]:
    """Host header values the studio answers: loopback names, the bound host and any given ones.

    On 0.0.0.0 the machine's own name and addresses are added, so it answers on the local network
    (behind its password) but never to a name someone else points at it.
    """
    hosts = list(LOOPBACK)
    if host in ("0.0.0.0", "::"):
        name = socket.gethostname()
        hosts += [name, socket.getfqdn()]
        try:
            hosts += socket.gethostbyname_ex(name)[2]
        except OSError:
            pass
    else:
        hosts.append(host)
    hosts += extra or []
    return list(dict.fromkeys(h for h in hosts if h))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python app.py", description="PEFT Studio in the browser")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); anything else needs --auth")
    p.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)))
    p.add_argument("--auth", default=None, help="user:password required to open the studio (or STUDIO_AUTH)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests addressed to this host name (repeatable)")
    p.add_argument("--model", default=os.environ.get("STUDIO_MODEL", "embedded"),
                   help="model preselected on the Model tab (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--runs", default=os.environ.get("STUDIO_RUNS", "runs"), help="folder of run folders")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="also let paths typed in the browser read from this folder (repeatable; or "
                        "STUDIO_ALLOWED_DIRS, separated by os.pathsep)")
    return p


def launch_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments for ``Blocks.launch``, or LaunchError when the settings are unsafe."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from studio.ui.app import CSS
    from studio.ui.paths import block_for_gradio

    auth = parse_auth(args.auth or os.environ.get("STUDIO_AUTH"))
    if args.host not in LOOPBACK and auth is None:
        raise LaunchError(f"error: listening on {args.host} needs a password: add --auth user:password "
                          "or set STUDIO_AUTH")
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(args.host, args.allow_host))]
    return dict(
        server_name=args.host, server_port=args.port, share=False, auth=auth, max_file_size=MAX_FILE_SIZE,
        run_history=False, footer_links=["api"], css=CSS, app_kwargs={"middleware": middleware},
        enable_monitoring=False, mcp_server=False, allowed_paths=[], blocked_paths=block_for_gradio(args.runs),
    )


def main(argv: list[str] | None = None, *, prevent_thread_lock: bool = False):
    """Parse the command line, build the app and serve it. Returns the Blocks when not blocking."""
    args = build_parser().parse_args(argv)
    try:
        kwargs = launch_kwargs(args)
    except LaunchError as err:
        print(err.code, file=sys.stderr)
        return 2
    from studio.ui import paths
    from studio.ui.app import build_app

    paths.set_extra(args.allow_dir)
    demo = build_app(default_model=args.model, runs_root=args.runs)
    demo.queue(default_concurrency_limit=1)
    demo.launch(prevent_thread_lock=prevent_thread_lock, quiet=prevent_thread_lock, **kwargs)
    return demo if prevent_thread_lock else 0
