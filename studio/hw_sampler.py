"""HardwareSampler: one thread that samples the machine at most once a second while a run trains.

Per GPU (through pynvml, where a GPU exists): utilisation, memory used, temperature and power. Always: this
process's resident memory and CPU use, so a machine without a GPU still has a hardware chart. Each sample is
one line of ``hardware.jsonl`` beside ``metrics.jsonl`` in the run folder, a ``hardware`` event and the
``hardware`` field of the run's progress snapshot::

    sampler = HardwareSampler(run_dir, log).start()
    ...                                   # training
    sampler.stop()                        # takes a last sample and joins the thread

A sample::

    {"time": 1764650000.1, "elapsed": 12.0, "step": 7, "rss_bytes": 812000000, "cpu_percent": 187.5,
     "gpus": [{"index": 0, "utilization": 97, "memory_used_bytes": ..., "memory_total_bytes": ...,
               "temperature_c": 61, "power_w": 412.3}]}           # "gpus" only where pynvml sees one
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from studio import runs

__all__ = ["HardwareSampler", "read_hardware", "gpu_reader", "MIN_INTERVAL", "FILE_NAME"]

MIN_INTERVAL = 1.0
"""seconds between samples, at least: sampling must not cost training time"""

FILE_NAME = "hardware.jsonl"


class _Nvml:
    """pynvml handles for every GPU, opened once (nvmlInit is slow compared with a reading)."""

    def __init__(self, pynvml, count: int):
        self.nvml = pynvml
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def read(self) -> list[dict]:
        nv, out = self.nvml, []
        for i, h in enumerate(self.handles):
            row: dict[str, Any] = {"index": i}
            # one failing reading (a GPU without a power sensor) must not lose the others
            for key, get in (("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu),
                             ("memory_used_bytes", lambda: nv.nvmlDeviceGetMemoryInfo(h).used),
                             ("memory_total_bytes", lambda: nv.nvmlDeviceGetMemoryInfo(h).total),
                             ("temperature_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                             ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)):
                try:
                    row[key] = get()
                except nv.NVMLError:
                    row[key] = None
            out.append(row)
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def gpu_reader() -> _Nvml | None:
    """An open pynvml reader when this machine has an NVIDIA GPU and driver, else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver or no GPU all mean: sample the CPU only
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError:
        count = 0
    if count == 0:
        pynvml.nvmlShutdown()
        return None
    return _Nvml(pynvml, count)


class HardwareSampler:
    """Samples the hardware in one background thread until ``stop``.

    Args:
        run_dir: the run folder; samples are appended to its hardware.jsonl (None: kept in memory only).
        log: the run's RunLog (events and snapshot), or None.
        interval: seconds between samples; raised to MIN_INTERVAL when lower.
    """

    def __init__(self, run_dir: str | Path | None, log=None, *, interval: float = MIN_INTERVAL):
        self.path = Path(run_dir) / FILE_NAME if run_dir is not None else None
        self.log = log
        self.interval = max(MIN_INTERVAL, float(interval))
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._gpu: _Nvml | None = None
        self._t0 = 0.0

    @property
    def alive(self) -> bool:
        """Whether the sampling thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "HardwareSampler":
        """Open the GPU reader (if any), take the first sample and start the thread."""
        self._gpu = gpu_reader()
        self._process.cpu_percent(None)  # the first call only sets psutil's reference point
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._loop, name="hardware-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Take a last sample, end the thread and wait for it (no thread is left behind)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None

    def sample(self) -> dict:
        """One reading of the machine now (also used by the thread)."""
        now = time.time()
        row: dict[str, Any] = {"time": round(now, 3), "elapsed": round(now - self._t0, 3)}
        if self.log is not None:
            row["step"] = self.log.snapshot().get("step", 0)
        with self._process.oneshot():
            row["rss_bytes"] = self._process.memory_info().rss
            row["cpu_percent"] = self._process.cpu_percent(None)
        if self._gpu is not None:
            row["gpus"] = self._gpu.read()
        return row

    def _record(self) -> None:
        row = self.sample()
        self.samples.append(row)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        if self.log is not None:
            self.log.update(hardware=row)
            self.log.event("hardware", **row)

    def _loop(self) -> None:
        try:
            self._record()
            while not self._stop.wait(self.interval):
                self._record()
            self._record()  # the last reading, so even a run shorter than a second has two
        except OSError:  # the run folder went away or the disk is full: sampling ends, training does not
            return


def read_hardware(run_dir: str | Path) -> list[dict]:
    """Every sample in the run folder's hardware.jsonl ([] when none); a line cut short is skipped."""
    return runs.read_jsonl(Path(run_dir) / FILE_NAME)
