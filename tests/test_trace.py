"""The meta-device trace keeps its noise to itself without taking the process's stderr away from other threads."""

from __future__ import annotations

import sys

from studio import trace


def test_a_trace_leaves_stderr_writable(monkeypatch):
    seen = []

    def build(*args):
        seen.append(sys.stderr)
        sys.stderr.write("noise from building a foreign architecture\n")  # another thread may write meanwhile
        raise ValueError("not a model type this transformers knows")

    monkeypatch.setattr(trace, "_build", build)
    assert trace.parameters('{"model_type": "stderr-check"}') == (0, 0)
    assert seen and seen[0] is not None and seen[0] is not sys.__stderr__
