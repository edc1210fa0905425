"""What one training step of the real architecture keeps for backward, traced on the meta device.

The model is built from its config on the meta device (no memory, no weights), the run's method is
applied through the registry, and a forward pass with labels runs under
``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd saves for backward is counted once
(by storage), and charged to the part of the model that saved it first (the embedding, each decoder
layer, the expert modules inside a layer, the head and loss). Parameters and buffers are not
activations and are left out. Three sequence lengths give, per part, bytes = c + a*s + b*s^2 per row,
so the estimate scales to any batch and length without tracing again; one trace per model, method,
dtype and attention kernel is cached.

Because the real modules run, whatever the architecture does is counted without modelling it by hand:
mixture-of-experts routing (top-k routed tokens, every expert's weights, shared experts), soft-capping
and extra norms (Gemma 2/3), fused projections (Phi-3, GPT-2's Conv1D, Falcon), sliding-window and
alternating attention, dropout masks, tied or untied heads. What it cannot reach (quantised weights,
optimizer state, the allocator) stays with the formulas in studio.memory.

    t = trace(arch.config, "lora", '{"r": 8}', "fp32", "sdpa", "cpu")   # a Trace, or None
    t.saved("layers", seq=512) * batch
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from studio import methods
from studio.config import MethodSpec, ModelSpec

__all__ = ["Trace", "trace", "parameters", "SEQS"]

SEQS = (32, 64, 96)  # three lengths fit c + a*s + b*s^2 exactly (eager attention's scores are quadratic)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Trace:
    """Bytes saved for backward per row of ``s`` tokens, per part, as (c, a, b): c + a*s + b*s^2."""

    embed: tuple
    layers: tuple  # one (c, a, b) per decoder layer, bottom first
    head: tuple  # final norm, LM head, soft-capping, the loss
    routed: tuple  # the share of ``layers`` saved inside expert modules (routed tokens), all layers
    params: int  # the base model's parameters
    expert_params: int  # routed experts' weights (shared experts not included)
    router_params: int
    trainable: int  # parameters that train once the method is applied
    largest_trainable: int  # the largest single trainable tensor (a CPU optimizer step's temporary)

    def saved(self, part: str, seq: int) -> float:
        """Bytes one row of ``seq`` tokens keeps for ``part`` ('embed', 'head', 'routed', 'layers' summed)."""
        if part == "layers":
            return sum(_at(c, seq) for c in self.layers)
        return _at(getattr(self, part), seq)

    def layer(self, i: int, seq: int) -> float:
        """Bytes one row keeps for decoder layer ``i``."""
        return _at(self.layers[i], seq)


def _at(coef: tuple, s: int) -> float:
    c, a, b = coef
    return max(0.0, c + a * s + b * s * s)


def _fit(y1: float, y2: float, y3: float) -> tuple:
    """(c, a, b) through the three points at SEQS (equally spaced)."""
    h, s1 = SEQS[1] - SEQS[0], SEQS[0]
    d1, d2 = y2 - y1, y3 - y2
    b = (d2 - d1) / (2 * h * h)
    a = d1 / h - b * (2 * s1 + h)
    return (y1 - a * s1 - b * s1 * s1, a, b)


class _MetaKernels(TorchFunctionMode):
    """Send sdpa where a real run's dispatcher sends it: meta tensors always get the math kernel (which
    keeps the heads x seq^2 scores), a real run gets the fused flash kernel (q, k, v, the output and a
    logsumexp) whenever it can. torch's own chooser decides, asked with empty CPU tensors of the same
    shapes (a few MB at the trace's lengths); when planning for a GPU, attention dropout does not stop
    the fused kernels there."""

    def __init__(self, device: str):
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args[0].is_meta:
            named = dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal"), args), **kwargs)
            q, k, v, mask = named["query"], named["key"], named["value"], named.get("attn_mask")
            causal, scale = named.get("is_causal", False), named.get("scale")
            dropout = 0.0 if self.device == "cuda" else named.get("dropout_p", 0.0)
            cpu = lambda t: None if t is None else torch.empty(t.shape, dtype=t.dtype)  # noqa: E731
            if torch._fused_sdp_choice(cpu(q), cpu(k), cpu(v), cpu(mask), dropout, causal, scale=scale,
                                       enable_gqa=named.get("enable_gqa", False)) != 0:  # 0: the math kernel
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, 0.0, causal, attn_mask=mask, scale=scale)[0]
        return func(*args, **kwargs)


class _MetaGroupedMM(TorchDispatchMode):
    """Grouped expert matmuls on meta tensors: the meta kernel accepts only bf16, the real CPU and GPU
    kernels any float; the output shape is all a trace needs (autograd has decided what to save above)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._grouped_mm.default and args[0].is_meta:
            a, b = args[0], args[1]
            return torch.empty(a.shape[0], b.shape[-1], dtype=a.dtype, device="meta")
        return func(*args, **(kwargs or {}))


def _layers(model, n: int | None) -> tuple[str, list]:
    """The decoder layers' ModuleList (its name and its layers): as long as the config's layer count, else
    the longest list."""
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    exact = [item for item in lists if len(item[1]) == n]
    name, found = max(exact or lists, key=lambda item: len(item[1])) if lists else ("", [])
    return name, list(found)


def _kinds(model, layers: list) -> list[int]:
    """For each layer, the index of the first layer of its kind. Layers of one kind have the same modules,
    shapes and trainable parameters, the same attention type, and gradient arriving from below or not:
    they save the same tensors, so one of each is traced and counted for all. The bottom layer is its own
    kind (its input comes from the embedding, which usually does not train)."""
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    flows = any(p.requires_grad for p in model.parameters() if id(p) not in in_layers and p.dim() > 1
                and p.shape[0] != getattr(model.config, "vocab_size", -1))  # a prompt encoder, adapters outside
    flows = flows or model.get_input_embeddings().weight.requires_grad
    first: dict = {}
    out = []
    for i, layer in enumerate(layers):
        params = tuple((n, tuple(p.shape), p.requires_grad) for n, p in layer.named_parameters())
        sig = (i == 0, flows, getattr(layer, "attention_type", None), params)
        out.append(first.setdefault(sig, i))
        flows = flows or any(p[2] for p in params)
    return out


def _keep_only(model, name: str, layers: list, keep: list[int]) -> None:
    """Leave only the layers ``keep`` in the model (and their attention types in its config, in order)."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    for position, i in enumerate(keep):  # the KV cache a training forward builds is indexed by position
        for mod in layers[i].modules():
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = position
    for config in {id(c): c for c in (model.config, getattr(model.get_base_model(), "config", None)
                                      if hasattr(model, "get_base_model") else None) if c is not None}.values():
        types = getattr(config, "layer_types", None)
        if isinstance(types, list) and len(types) == len(layers):
            config.layer_types = [types[i] for i in keep]
        config.num_hidden_layers = len(keep)


class _Recorder:
    """Charges each saved storage to the part running when autograd first saved it."""

    def __init__(self, model, layers: list, skip: set):
        self.where, self.experts, self.skip = "embed", 0, skip
        self.bytes: dict = {}
        self.routed: dict = {}
        self.seen: set = set()
        self.handles = []
        for i, layer in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(lambda *_, i=i: self._set(i)))
            self.handles.append(layer.register_forward_hook(lambda *_: self._set("head")))
        for name, mod in model.named_modules():
            if name.endswith(".experts"):
                self.handles.append(mod.register_forward_pre_hook(lambda *_: self._experts(1)))
                self.handles.append(mod.register_forward_hook(lambda *_: self._experts(-1)))

    def _set(self, where) -> None:
        self.where = where

    def _experts(self, step: int) -> None:
        self.experts += step

    def pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor without storage (sparse, nested) holds no bytes here
            return t
        key = st._cdata
        if key not in self.skip and key not in self.seen:
            self.seen.add(key)
            self.bytes[self.where] = self.bytes.get(self.where, 0) + st.nbytes()
            if self.experts:
                self.routed[self.where] = self.routed.get(self.where, 0) + st.nbytes()
        return t

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _build(config_json: str, dtype: torch.dtype, attn: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads(config_json)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config._attn_implementation = attn
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except ValueError:  # the architecture refuses this kernel (Gemma 2: no sdpa); it runs eager
            config._attn_implementation = "eager"
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return config, model


def _counts(model) -> tuple[int, int, int]:
    """(all parameters, routed experts' parameters, routers' parameters) of the base model; a tied head
    is the embedding's own tensor and counts once."""
    total = experts = router = 0
    for name, p in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0])
        total += p.numel()
        if ".experts." in name and "shared" not in name:
            experts += p.numel()
        elif "router" in type(owner).__name__.lower():
            router += p.numel()
    return total, experts, router


@lru_cache(maxsize=64)
def parameters(config_json: str) -> tuple[int, int]:
    """(all parameters, routed experts' parameters) of the model ``config_json`` builds (a tied head counted
    once); (0, 0) when it does not build."""
    try:
        # a sink, never None: sys.stderr is the whole process's, and meanwhile another thread (a model loading
        # behind a progress bar for the Benchmarks panel, say) may write to it
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return _counts(_build(config_json, torch.bfloat16, "sdpa")[1])[:2]
    except Exception:  # a model type this transformers does not know: the caller counts from the shapes
        return 0, 0


@lru_cache(maxsize=64)
def trace(config_json: str, method: str, knobs_json: str, dtype: str, attn: str, device: str) -> Trace | None:
    """The Trace of one training forward of the model ``config_json`` (a config's dict as JSON) with the
    method ``method`` (knobs as JSON), weights in ``dtype``, attention ``attn``, planned for ``device``.

    Returns None when the architecture cannot be built or the method cannot be applied on the meta
    device (a model type this transformers does not know, code shipped with the model, a method that
    needs real weights): the estimate then keeps its formulas.
    """
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return _trace(config_json, method, knobs_json, _DTYPES[dtype], attn, device)
    except Exception:  # any failure of a foreign architecture on meta tensors means: use the formulas
        return None


def _layer_blind(method: str, knobs: dict) -> bool:
    """Whether the method treats every layer of one kind alike, so it can be applied after pruning (far
    faster: PEFT then wraps a handful of layers, not every one). Weight methods pick blocks by position
    (freeze's top_blocks), and a target naming a layer by its number does too."""
    named = [str(x) for v in knobs.values() if isinstance(v, list) for x in v]
    return methods.get(method).family != "weights" and not any(c.isdigit() for x in named for c in x)


def _apply(model, method: str, spec: MethodSpec, dtype, attn: str):
    model_spec = ModelSpec(dtype={v: k for k, v in _DTYPES.items()}[dtype], attn_implementation=attn)
    with torch.device("meta"):  # the method's new weights (adapters) are born on meta too: no CPU init
        return methods.get(method).apply(model, spec, methods.Context(model_spec=model_spec, total_steps=1))


def _trace(config_json, method, knobs_json, dtype, attn, device) -> Trace:
    config, model = _build(config_json, dtype, attn)
    params, experts, router = _counts(model)
    spec = MethodSpec(method, json.loads(knobs_json))
    model.train()
    n = getattr(config, "num_hidden_layers", None)
    blind = _layer_blind(method, spec.knobs)
    if not blind:  # apply first: which layers train decides their kinds
        model = _apply(model, method, spec, dtype, attn)
    name, layers = _layers(model, n)
    kinds = _kinds(model, layers)
    keep = sorted(set(kinds))
    _keep_only(model, name, layers, keep)
    if blind:
        model = _apply(model, method, spec, dtype, attn)
    kept = [layers[i] for i in keep]
    per_layer = [sum(p.numel() for p in layer.parameters() if p.requires_grad) for layer in kept]
    outside = sum(p.numel() for p in model.parameters() if p.requires_grad) - sum(per_layer)
    trained = [p.numel() for p in model.parameters() if p.requires_grad]
    runs = _run(model, kept, device)
    part = lambda key: _fit(*(r.bytes.get(key, 0) for r in runs))  # noqa: E731
    routed = _fit(*(sum(r.routed.get(keep.index(k), 0) for k in kinds) for r in runs))
    return Trace(embed=part("embed"), layers=tuple(part(keep.index(k)) for k in kinds), head=part("head"),
                 routed=routed, params=params, expert_params=experts, router_params=router,
                 trainable=outside + sum(per_layer[keep.index(k)] for k in kinds),
                 largest_trainable=max(trained, default=0))


def _run(model, kept: list, device: str) -> list:
    """One recorded training forward per length in SEQS."""
    skip = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    runs = []
    for s in SEQS:
        ids = torch.zeros(1, s, dtype=torch.long, device="meta")
        rec = _Recorder(model, kept, skip | {ids.untyped_storage()._cdata})
        try:
            with _MetaKernels(device), _MetaGroupedMM(), \
                    torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
                model(input_ids=ids, labels=ids)
        finally:
            rec.close()
        runs.append(rec)
    return runs
