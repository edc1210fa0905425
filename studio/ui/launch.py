"""Launch the studio on 127.0.0.1 with safe defaults."""

from __future__ import annotations

import argparse
import os


def build_app():
    import gradio as gr

    with gr.Blocks(title="PEFT Studio") as demo:
        gr.Markdown("# PEFT Studio\nModel: **embedded SmolLM2-135M-Instruct**")
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="PEFT Studio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", 7860)))
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    build_app().launch(server_name=args.host, server_port=args.port, share=False)
    return 0
