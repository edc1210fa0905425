"""Export a run to GGUF for llama.cpp, Ollama and LM Studio, with llama.cpp's own converter and quantiser.

Two formats:

- ``gguf``: the base with the run's update merged in (methods that merge; whole-model methods as they are),
  converted by ``convert_hf_to_gguf.py`` to f16/bf16/f32/q8_0, other quantisations by llama.cpp's quantiser.
  The chat template travels in the GGUF metadata (``tokenizer.chat_template``).
- ``gguf-lora``: the LoRA adapter as a GGUF adapter (``convert_lora_to_gguf.py``) beside the base as a GGUF,
  for runtimes that apply adapters at load time (llama.cpp ``--lora``, Ollama ``ADAPTER``).

Both write an Ollama Modelfile and a README saying how to run the result.

    export_gguf("runs/lora-identity", "exports/identity-gguf", quants=["f16", "q4_k_m"])
    export_gguf_lora("runs/lora-identity", "exports/identity-lora-gguf")
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio import export, llamacpp, modelfile, models
from studio.chat import read_run
from studio.config import ConfigError, RunConfig

__all__ = ["GgufExport", "QUANTS", "export_gguf", "export_gguf_lora", "chat_template_of"]

QUANTS = (*llamacpp.CONVERT_TYPES, *sorted(set(llamacpp.QUANT_TYPES) - set(llamacpp.CONVERT_TYPES)))
Progress = Callable[[float, str], None]


@dataclass
class GgufExport:
    """What an export wrote: the folder, each GGUF file with its size, and the Modelfile."""

    folder: Path
    files: dict[str, int] = field(default_factory=dict)
    """GGUF file name -> bytes"""
    modelfile: Path | None = None

    def summary(self) -> str:
        """One line per file: name and size in MB."""
        return "\n".join(f"{self.folder / n}  {b / 2**20:.1f} MB" for n, b in self.files.items())


def _quiet(fraction: float, text: str) -> None:
    pass


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out: {out} already exists and is not an empty folder; choose a new folder")


def _check_quants(quants: list[str]) -> list[str]:
    bad = [q for q in quants if q not in QUANTS]
    if bad or not quants:
        raise ConfigError(f"--quant: {', '.join(bad) or 'none given'}: choose from {', '.join(QUANTS)}")
    return list(dict.fromkeys(quants))


def _refuse_unless_whole(method, run_dir: Path) -> None:
    """GGUF holds a whole model: the update must merge into the base, or be the whole model already."""
    if method.can_merge or method.fmt == "weights":
        return
    why = method.merge_refusal or "its result is not an update of the base weights"
    raise ConfigError(f"{method.name}: cannot become a GGUF ({why}); export the adapter instead: "
                      f"python -m studio export {run_dir} --out DIR")


def _convert_all(hf_dir: Path, out: Path, stem: str, quants: list[str], progress: Progress) -> dict[str, int]:
    """Each requested type: written by the converter where it can, else quantised from an f16 file."""
    files: dict[str, int] = {}
    direct = [q for q in quants if q in llamacpp.CONVERT_TYPES]
    needs_f16 = any(q not in llamacpp.CONVERT_TYPES for q in quants)
    scratch = [] if not needs_f16 or "f16" in direct else ["f16"]
    steps = len(quants) + len(scratch)
    done = 0
    for q in [*direct, *scratch]:
        progress(0.35 + 0.6 * done / steps, f"converting to {q} with convert_hf_to_gguf.py")
        llamacpp.convert_model(hf_dir, out / f"{stem}-{q}.gguf", q)
        done += 1
    for q in quants:
        if q in direct:
            continue
        progress(0.35 + 0.6 * done / steps, f"quantising to {q} with llama.cpp")
        llamacpp.quantize(out / f"{stem}-f16.gguf", out / f"{stem}-{q}.gguf", q)
        done += 1
    for q in scratch:
        (out / f"{stem}-{q}.gguf").unlink()
    for q in quants:
        files[f"{stem}-{q}.gguf"] = (out / f"{stem}-{q}.gguf").stat().st_size
    return files


def export_gguf(run_dir: str | Path, out: str | Path, quants: list[str] | tuple[str, ...] = ("f16",),
                dequantize: bool = False, progress: Progress = _quiet, say: Callable[[str], None] = print
                ) -> GgufExport:
    """Merge a run into its base and write it as GGUF files, a Modelfile and a README into ``out``.

    Args:
        run_dir: the run folder.
        out: a new or empty folder.
        quants: GGUF types to write (QUANTS): f16, bf16 and f32 by the converter, the rest by the quantiser.
        dequantize: allow a run trained on a 4-/8-bit base (merged onto the full-precision base).
        progress: called with (fraction done, what is happening).
        say: one line before llama.cpp is built on first use.

    Raises:
        ConfigError: a method that cannot become a GGUF, a bad request, or a tool that failed, in one line.
    """
    run_dir, out = Path(run_dir), Path(out)
    cfg, method, _ = read_run(run_dir)
    quants = _check_quants(list(quants))
    _refuse_unless_whole(method, run_dir)
    _check_out(out)
    progress(0.0, "preparing llama.cpp")
    llamacpp.ensure(say)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="merged-", dir=out) as tmp:
        hf_dir = Path(tmp) / "hf"
        progress(0.1, "merging the update into the base" if method.can_merge else "collecting the model")
        # fp32 in, so the converter rounds once, to the requested type
        export.export_run(run_dir, hf_dir, merge=method.can_merge, dtype="fp32" if method.can_merge else "auto",
                          dequantize=dequantize)
        files = _convert_all(hf_dir, out, run_dir.name, quants, progress)
        tok = _tokenizer(hf_dir)
        smallest = min(files, key=files.get)
        progress(0.97, "writing the Modelfile and README")
        mf = _write_modelfile(out, smallest, tok, cfg, hf_dir)
    (out / "README.md").write_text(_card(cfg, method, run_dir, files, smallest, lora=None), encoding="utf-8")
    progress(1.0, "done")
    return GgufExport(out, files, mf)


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _context(folder: Path) -> int:
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    n = cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048
    return int(min(n, 8192))  # a long context costs KV-cache memory in the runtime; 8k covers chat


def _write_modelfile(out: Path, gguf_name: str, tok, cfg: RunConfig, hf_dir: Path,
                     adapter: str | None = None) -> Path:
    text = modelfile.modelfile_text(gguf_name, tok, cfg.data.system_prompt, _context(hf_dir))
    if adapter:
        first, rest = text.split("\n", 1)
        text = f"{first}\nADAPTER ./{adapter}\n{rest}"
    path = out / "Modelfile"
    path.write_text(text, encoding="utf-8")
    return path


def chat_template_of(gguf_file: str | Path) -> str | None:
    """The chat template stored in a GGUF file's metadata (``tokenizer.chat_template``), or None."""
    from gguf import GGUFReader

    f = GGUFReader(str(gguf_file)).fields.get("tokenizer.chat_template")
    return bytes(f.parts[f.data[0]]).decode("utf-8") if f is not None else None


def _is_plain_lora(folder: Path) -> str | None:
    """Why llama.cpp cannot load this adapter, or None when it is a plain PEFT LoRA."""
    try:
        conf = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "it is not a PEFT adapter"
    if conf.get("peft_type") != "LORA":
        return f"it is a {conf.get('peft_type', 'non-PEFT')} adapter, not LoRA"
    if conf.get("use_dora"):
        return "DoRA's magnitude vectors have no GGUF adapter form"
    return None


def export_gguf_lora(run_dir: str | Path, out: str | Path, base_quant: str = "f16", progress: Progress = _quiet,
                     say: Callable[[str], None] = print) -> GgufExport:
    """Write the run's LoRA as a GGUF adapter, the base as a GGUF beside it, a Modelfile (ADAPTER) and a README.

    Raises:
        ConfigError: the run is not a plain LoRA (the line says what to export instead), or a tool failed.
    """
    run_dir, out = Path(run_dir), Path(out)
    cfg, method, folder = read_run(run_dir)
    why = _is_plain_lora(folder)
    if why:
        instead = "--format gguf (the merged model)" if method.can_merge else "the adapter (leave out --format)"
        raise ConfigError(f"{method.name}: llama.cpp cannot load this as a GGUF adapter ({why}); export {instead}")
    _check_quants([base_quant])
    _check_out(out)
    progress(0.0, "preparing llama.cpp")
    llamacpp.ensure(say)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=out) as tmp:
        base_dir = Path(tmp) / "base"
        progress(0.1, "loading the base")
        model, tok = models.load(dataclasses.replace(cfg.model, quantization="none", dtype="fp32"))
        model.save_pretrained(base_dir, safe_serialization=True)
        tok = _run_tokenizer(run_dir, tok)
        tok.save_pretrained(base_dir)
        del model
        base_name = _convert_all(base_dir, out, f"{run_dir.name}-base", [base_quant], progress)
        progress(0.8, "converting the adapter with convert_lora_to_gguf.py")
        adapter = f"{run_dir.name}-lora-f16.gguf"
        llamacpp.convert_lora(folder, base_dir, out / adapter)
        files = {**base_name, adapter: (out / adapter).stat().st_size}
        mf = _write_modelfile(out, next(iter(base_name)), tok, cfg, base_dir, adapter=adapter)
    (out / "README.md").write_text(_card(cfg, method, run_dir, files, next(iter(base_name)), lora=adapter),
                                   encoding="utf-8")
    progress(1.0, "done")
    return GgufExport(out, files, mf)


def _run_tokenizer(run_dir: Path, fallback):
    saved = run_dir / "tokenizer"
    return _tokenizer(saved) if saved.is_dir() else fallback


def _card(cfg: RunConfig, method, run_dir: Path, files: dict[str, int], main: str, lora: str | None) -> str:
    body = export.model_card(cfg, method, run_dir, merged=lora is None)
    body = body.split("\n## Load it", 1)[0].replace("library_name: transformers", "library_name: gguf")
    body = body.replace("library_name: peft", "library_name: gguf")
    sizes = ["| file | size |", "|---|---|", *[f"| {n} | {b / 2**20:.1f} MB |" for n, b in files.items()]]
    lora_flag = f" --lora {lora}" if lora else ""
    run = [
        "## Files", "", *sizes, "",
        "The chat template is stored in the GGUF (`tokenizer.chat_template`), so the runtime formats turns as "
        "training did.", "",
        "## Run it", "", "llama.cpp:", "", "```sh",
        f"llama-cli -m {main}{lora_flag} -cnv", f"llama-server -m {main}{lora_flag} --port 8080", "```", "",
        "Ollama (the Modelfile beside this file names the file, template, system prompt and stop tokens):", "",
        "```sh", f"ollama create {run_dir.name} -f Modelfile", f"ollama run {run_dir.name}", "```", "",
        "LM Studio: copy the .gguf file" + ("s" if lora else "") + " into its models folder "
        "(`lms import " + main + "`) and load it.", "",
    ]
    return body.rstrip() + "\n\n" + "\n".join(run)
