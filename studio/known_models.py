"""Architectures of well-known models as data, so the estimator works for a hub id with no hub access.

Numbers are copied from each model's published config.json (hidden_size, num_hidden_layers,
num_attention_heads, num_key_value_heads, intermediate_size, vocab_size, tie_word_embeddings).
Used only when the real config cannot be read (offline, gated, not downloaded yet).
"""

from __future__ import annotations

from studio.models import ArchSpec

__all__ = ["KNOWN", "lookup", "ASSUMPTIONS"]


def _dec(model_type: str, h: int, layers: int, heads: int, kv: int, ff: int, vocab: int, ctx: int,
         tied: bool, qkv_bias: bool = False) -> ArchSpec:
    return ArchSpec(model_type=model_type, hidden_size=h, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                    head_dim=h // heads, intermediate_size=ff, vocab_size=vocab, max_position=ctx,
                    tied_embeddings=tied, attention_bias=qkv_bias)


# Key: a lower-case fragment of the id's last path part (matched longest first).
KNOWN: dict[str, ArchSpec] = {
    "llama-2-7b": _dec("llama", 4096, 32, 32, 32, 11008, 32000, 4096, False),
    "llama-2-13b": _dec("llama", 5120, 40, 40, 40, 13824, 32000, 4096, False),
    "llama-2-70b": _dec("llama", 8192, 80, 64, 8, 28672, 32000, 4096, False),
    "llama-3-8b": _dec("llama", 4096, 32, 32, 8, 14336, 128256, 8192, False),
    "llama-3.1-8b": _dec("llama", 4096, 32, 32, 8, 14336, 128256, 131072, False),
    "llama-3-70b": _dec("llama", 8192, 80, 64, 8, 28672, 128256, 8192, False),
    "llama-3.1-70b": _dec("llama", 8192, 80, 64, 8, 28672, 128256, 131072, False),
    "llama-3.2-1b": _dec("llama", 2048, 16, 32, 8, 8192, 128256, 131072, True),
    "llama-3.2-3b": _dec("llama", 3072, 28, 24, 8, 8192, 128256, 131072, True),
    "mistral-7b": _dec("mistral", 4096, 32, 32, 8, 14336, 32000, 32768, False),
    "qwen2.5-0.5b": _dec("qwen2", 896, 24, 14, 2, 4864, 151936, 32768, True, True),
    "qwen2.5-1.5b": _dec("qwen2", 1536, 28, 12, 2, 8960, 151936, 32768, True, True),
    "qwen2.5-3b": _dec("qwen2", 2048, 36, 16, 2, 11008, 151936, 32768, True, True),
    "qwen2.5-7b": _dec("qwen2", 3584, 28, 28, 4, 18944, 152064, 32768, False, True),
    "qwen2.5-14b": _dec("qwen2", 5120, 48, 40, 8, 13824, 152064, 32768, False, True),
    "qwen2.5-32b": _dec("qwen2", 5120, 64, 40, 8, 27648, 152064, 32768, False, True),
    "qwen2.5-72b": _dec("qwen2", 8192, 80, 64, 8, 29568, 152064, 32768, False, True),
    "smollm2-135m": _dec("llama", 576, 30, 9, 3, 1536, 49152, 8192, True),
    "smollm2-360m": _dec("llama", 960, 32, 15, 5, 2560, 49152, 8192, True),
    "smollm2-1.7b": _dec("llama", 2048, 24, 32, 32, 8192, 49152, 8192, True),
    # T0_3B is a T5 v1.1 XL encoder-decoder (d_model 2048, d_ff 5120 gated-GELU, 32 heads of 64, 24 + 24
    # blocks, untied 32128 vocab). The estimator models decoder stacks only, so it is taken as 56 decoder
    # blocks: the 48 real blocks plus the decoder's 24 cross-attention modules (~403M parameters, about
    # 8 blocks' worth), every block seeing the same sequence length. Parameters match to ~1%.
    "t0_3b": ArchSpec(model_type="t5", hidden_size=2048, num_layers=56, num_heads=32, num_kv_heads=32,
                      head_dim=64, intermediate_size=5120, vocab_size=32128, max_position=512,
                      tied_embeddings=False),
}

ASSUMPTIONS = {
    "t0_3b": "encoder-decoder modelled as 56 decoder blocks of equal parameter count, one sequence length",
}


def lookup(model_id: str) -> tuple[str, ArchSpec] | None:
    """The known architecture whose key occurs in ``model_id``'s last part, as (key, arch), or None."""
    name = model_id.strip().rstrip("/").split("/")[-1].lower()
    for key in sorted(KNOWN, key=len, reverse=True):
        if key in name:
            return key, KNOWN[key]
    return None
