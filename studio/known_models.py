"""Architectures of well-known models as data, so planning works for a hub id with no hub access.

Each entry holds the values of the model's published config.json (the file in its hub repository:
hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, intermediate_size,
vocab_size, max_position_embeddings, tie_word_embeddings, and the family's own keys: experts and
top-k, shared experts, soft-capping, sliding windows, latent attention ranks). The entries become real
transformers configs, so the estimate traces the same modules a downloaded config would build
(studio.trace). Used only when the real config cannot be read (offline, gated, not downloaded yet).
"""

from __future__ import annotations

from studio.models import ArchSpec

__all__ = ["KNOWN", "CONFIGS", "lookup", "ASSUMPTIONS"]


def _llama(h, layers, heads, kv, ff, vocab, ctx, tied, **more) -> dict:
    return dict(model_type="llama", hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, intermediate_size=ff, vocab_size=vocab, max_position_embeddings=ctx,
                tie_word_embeddings=tied, **more)


def _like(model_type: str, **values) -> dict:
    return dict(model_type=model_type, **values)


_L3 = dict(rope_theta=500000.0)
_Q3 = dict(head_dim=128, vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000.0)
_G2 = dict(head_dim=256, vocab_size=256000, sliding_window=4096, attn_logit_softcapping=50.0,
           final_logit_softcapping=30.0, max_position_embeddings=8192, tie_word_embeddings=True)
_G3 = dict(head_dim=256, vocab_size=262208, sliding_window=1024, max_position_embeddings=131072,
           tie_word_embeddings=True, rope_theta=1000000.0)
_OSS = dict(hidden_size=2880, num_attention_heads=64, num_key_value_heads=8, head_dim=64, intermediate_size=2880,
            num_experts_per_tok=4, vocab_size=201088, sliding_window=128, max_position_embeddings=131072,
            tie_word_embeddings=False)

# Key: a lower-case fragment of the id's last path part (matched longest first).
CONFIGS: dict[str, dict] = {
    "llama-2-7b": _llama(4096, 32, 32, 32, 11008, 32000, 4096, False),
    "llama-2-13b": _llama(5120, 40, 40, 40, 13824, 32000, 4096, False),
    "llama-2-70b": _llama(8192, 80, 64, 8, 28672, 32000, 4096, False),
    "llama-3-8b": _llama(4096, 32, 32, 8, 14336, 128256, 8192, False, **_L3),
    "llama-3.1-8b": _llama(4096, 32, 32, 8, 14336, 128256, 131072, False, **_L3),
    "llama-3-70b": _llama(8192, 80, 64, 8, 28672, 128256, 8192, False, **_L3),
    "llama-3.1-70b": _llama(8192, 80, 64, 8, 28672, 128256, 131072, False, **_L3),
    "llama-3.3-70b": _llama(8192, 80, 64, 8, 28672, 128256, 131072, False, **_L3),
    "llama-3.2-1b": _llama(2048, 16, 32, 8, 8192, 128256, 131072, True, head_dim=64, **_L3),
    "llama-3.2-3b": _llama(3072, 28, 24, 8, 8192, 128256, 131072, True, head_dim=128, **_L3),
    "mistral-7b": _like("mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, intermediate_size=14336, vocab_size=32000,
                        max_position_embeddings=32768, sliding_window=4096, tie_word_embeddings=False),
    "mixtral-8x7b": _like("mixtral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=8, intermediate_size=14336, num_local_experts=8, num_experts_per_tok=2,
                          vocab_size=32000, max_position_embeddings=32768, rope_theta=1000000.0,
                          tie_word_embeddings=False),
    "mixtral-8x22b": _like("mixtral", hidden_size=6144, num_hidden_layers=56, num_attention_heads=48,
                           num_key_value_heads=8, intermediate_size=16384, num_local_experts=8, num_experts_per_tok=2,
                           vocab_size=32000, max_position_embeddings=65536, rope_theta=1000000.0,
                           tie_word_embeddings=False),
    "qwen2.5-0.5b": _like("qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                          intermediate_size=4864, vocab_size=151936, max_position_embeddings=32768,
                          tie_word_embeddings=True),
    "qwen2.5-1.5b": _like("qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                          num_key_value_heads=2, intermediate_size=8960, vocab_size=151936,
                          max_position_embeddings=32768, tie_word_embeddings=True),
    "qwen2.5-3b": _like("qwen2", hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                        intermediate_size=11008, vocab_size=151936, max_position_embeddings=32768,
                        tie_word_embeddings=True),
    "qwen2.5-7b": _like("qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                        intermediate_size=18944, vocab_size=152064, max_position_embeddings=32768,
                        tie_word_embeddings=False),
    "qwen2.5-14b": _like("qwen2", hidden_size=5120, num_hidden_layers=48, num_attention_heads=40,
                         num_key_value_heads=8, intermediate_size=13824, vocab_size=152064,
                         max_position_embeddings=32768, tie_word_embeddings=False),
    "qwen2.5-32b": _like("qwen2", hidden_size=5120, num_hidden_layers=64, num_attention_heads=40,
                         num_key_value_heads=8, intermediate_size=27648, vocab_size=152064,
                         max_position_embeddings=32768, tie_word_embeddings=False),
    "qwen2.5-72b": _like("qwen2", hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
                         num_key_value_heads=8, intermediate_size=29568, vocab_size=152064,
                         max_position_embeddings=32768, tie_word_embeddings=False),
    "qwen3-0.6b": _like("qwen3", hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                        intermediate_size=3072, tie_word_embeddings=True, **_Q3),
    "qwen3-1.7b": _like("qwen3", hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                        intermediate_size=6144, tie_word_embeddings=True, **_Q3),
    "qwen3-4b": _like("qwen3", hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=9728, tie_word_embeddings=True, **_Q3),
    "qwen3-8b": _like("qwen3", hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=12288, tie_word_embeddings=False, **_Q3),
    "qwen3-14b": _like("qwen3", hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=8,
                       intermediate_size=17408, tie_word_embeddings=False, **_Q3),
    "qwen3-32b": _like("qwen3", hidden_size=5120, num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8,
                       intermediate_size=25600, tie_word_embeddings=False, **_Q3),
    "qwen3-30b-a3b": _like("qwen3_moe", hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
                           num_key_value_heads=4, intermediate_size=6144, moe_intermediate_size=768, num_experts=128,
                           num_experts_per_tok=8, norm_topk_prob=True, tie_word_embeddings=False, **_Q3),
    "qwen3-235b-a22b": _like("qwen3_moe", hidden_size=4096, num_hidden_layers=94, num_attention_heads=64,
                             num_key_value_heads=4, intermediate_size=12288, moe_intermediate_size=1536,
                             num_experts=128, num_experts_per_tok=8, norm_topk_prob=True, tie_word_embeddings=False,
                             **_Q3),
    "gemma-2-2b": _like("gemma2", hidden_size=2304, num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        intermediate_size=9216, query_pre_attn_scalar=256, **_G2),
    "gemma-2-9b": _like("gemma2", hidden_size=3584, num_hidden_layers=42, num_attention_heads=16,
                        num_key_value_heads=8, intermediate_size=14336, query_pre_attn_scalar=256, **_G2),
    "gemma-2-27b": _like("gemma2", hidden_size=4608, num_hidden_layers=46, num_attention_heads=32,
                         num_key_value_heads=16, intermediate_size=36864, query_pre_attn_scalar=144,
                         **{**_G2, "head_dim": 128}),
    "gemma-3-1b": _like("gemma3_text", hidden_size=1152, num_hidden_layers=26, num_attention_heads=4,
                        num_key_value_heads=1, intermediate_size=6912, query_pre_attn_scalar=256,
                        **{**_G3, "vocab_size": 262144, "sliding_window": 512, "max_position_embeddings": 32768}),
    "gemma-3-4b": _like("gemma3_text", hidden_size=2560, num_hidden_layers=34, num_attention_heads=8,
                        num_key_value_heads=4, intermediate_size=10240, query_pre_attn_scalar=256, **_G3),
    "gemma-3-12b": _like("gemma3_text", hidden_size=3840, num_hidden_layers=48, num_attention_heads=16,
                         num_key_value_heads=8, intermediate_size=15360, query_pre_attn_scalar=256, **_G3),
    "gemma-3-27b": _like("gemma3_text", hidden_size=5376, num_hidden_layers=62, num_attention_heads=32,
                         num_key_value_heads=16, intermediate_size=21504, query_pre_attn_scalar=168,
                         **{**_G3, "head_dim": 128}),
    "phi-3-mini": _like("phi3", hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                        intermediate_size=8192, vocab_size=32064, max_position_embeddings=4096,
                        tie_word_embeddings=False, pad_token_id=32000),
    "phi-3-medium": _like("phi3", hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
                          num_key_value_heads=10, intermediate_size=17920, vocab_size=32064,
                          max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=32000),
    "phi-4": _like("phi3", hidden_size=5120, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=10,
                   intermediate_size=17920, vocab_size=100352, max_position_embeddings=16384,
                   tie_word_embeddings=False, pad_token_id=100349, rope_theta=250000.0),
    "phi-4-mini": _like("phi3", hidden_size=3072, num_hidden_layers=32, num_attention_heads=24, num_key_value_heads=8,
                        intermediate_size=8192, vocab_size=200064, max_position_embeddings=131072,
                        partial_rotary_factor=0.75, tie_word_embeddings=True, pad_token_id=199999),
    "gpt-oss-20b": _like("gpt_oss", num_hidden_layers=24, num_local_experts=32, **_OSS),
    "gpt-oss-120b": _like("gpt_oss", num_hidden_layers=36, num_local_experts=128, **_OSS),
    "deepseek-v2-lite": _like("deepseek_v2", hidden_size=2048, num_hidden_layers=27, num_attention_heads=16,
                              num_key_value_heads=16, q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128,
                              qk_rope_head_dim=64, v_head_dim=128, intermediate_size=10944,
                              moe_intermediate_size=1408, n_routed_experts=64, n_shared_experts=2,
                              num_experts_per_tok=6, first_k_dense_replace=1, vocab_size=102400,
                              max_position_embeddings=163840, tie_word_embeddings=False),
    "deepseek-v3": _like("deepseek_v3", hidden_size=7168, num_hidden_layers=61, num_attention_heads=128,
                         num_key_value_heads=128, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
                         qk_rope_head_dim=64, v_head_dim=128, intermediate_size=18432, moe_intermediate_size=2048,
                         n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
                         first_k_dense_replace=3, vocab_size=129280, max_position_embeddings=163840,
                         tie_word_embeddings=False),
    "smollm2-135m": _llama(576, 30, 9, 3, 1536, 49152, 8192, True, rope_theta=100000.0),
    "smollm2-360m": _llama(960, 32, 15, 5, 2560, 49152, 8192, True, rope_theta=100000.0),
    "smollm2-1.7b": _llama(2048, 24, 32, 32, 8192, 49152, 8192, True, rope_theta=130000.0),
    "smollm3-3b": _like("smollm3", hidden_size=2048, num_hidden_layers=36, num_attention_heads=16,
                        num_key_value_heads=4, intermediate_size=11008, vocab_size=128256,
                        max_position_embeddings=65536, tie_word_embeddings=True),
}
CONFIGS["deepseek-r1"] = CONFIGS["deepseek-v3"]  # the same architecture, other weights
CONFIGS["phi-3.5-mini"] = CONFIGS["phi-3-mini"]  # its 128k longrope scaling changes no tensor size


def _arch(values: dict) -> ArchSpec:
    from transformers import AutoConfig  # transformers' config classes, not a model: no weights, no hub

    rest = dict(values)
    return ArchSpec.from_config(AutoConfig.for_model(rest.pop("model_type"), **rest))


KNOWN: dict[str, ArchSpec] = {key: _arch(values) for key, values in CONFIGS.items()}
# T0_3B is a T5 v1.1 XL encoder-decoder (d_model 2048, d_ff 5120 gated-GELU, 32 heads of 64, 24 + 24
# blocks, untied 32128 vocab). The estimator models decoder stacks only, so it is taken as 56 decoder
# blocks: the 48 real blocks plus the decoder's 24 cross-attention modules (~403M parameters, about
# 8 blocks' worth), every block seeing the same sequence length. Parameters match to ~1%.
KNOWN["t0_3b"] = ArchSpec(model_type="t5", hidden_size=2048, num_layers=56, num_heads=32, num_kv_heads=32, head_dim=64,
                          intermediate_size=5120, vocab_size=32128, max_position=512, tied_embeddings=False)

_GEMMA3_TEXT = "the text decoder only: the vision tower (~0.4B) of the 4B/12B/27B releases is not counted"
_OSS_NOTE = "planned in bf16: the released checkpoint stores the experts in MXFP4, which this estimate does not model"
ASSUMPTIONS = {
    "t0_3b": "encoder-decoder modelled as 56 decoder blocks of equal parameter count, one sequence length",
    "gemma-3-4b": _GEMMA3_TEXT, "gemma-3-12b": _GEMMA3_TEXT, "gemma-3-27b": _GEMMA3_TEXT,
    "gpt-oss-20b": _OSS_NOTE, "gpt-oss-120b": _OSS_NOTE,
    "mixtral-8x22b": "v0.1 vocabulary (32000); the instruct release has 32768",
    "mistral-7b": "v0.1 (sliding window 4096, vocabulary 32000); v0.3 has 32768 tokens and no window",
}


def lookup(model_id: str) -> tuple[str, ArchSpec] | None:
    """The known architecture whose key occurs in ``model_id``'s last part, as (key, arch), or None."""
    name = model_id.strip().rstrip("/").split("/")[-1].lower()
    for key in sorted(KNOWN, key=len, reverse=True):
        if key in name:
            return key, KNOWN[key]
    return None
