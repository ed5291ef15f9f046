"""Independent PyTorch implementation of Hugging Face LlamaForCausalLM, plus the
file formats calm reads: safetensors (written and read by hand), config.json and a
sentencepiece tokenizer.model.

Written from the published semantics, not from transformers' code, so that it can
serve as an independent reference for the C++ library:
  - RMSNorm computed in float32 (or wider): x * rsqrt(mean(x^2) + eps) * w
  - RoPE, rotate_half convention: dimension j pairs with j + head_dim/2,
    inv_freq = 1 / theta^(arange(0, d, 2) / d), rescaled as config.json's rope_scaling
    says ("linear" or "llama3"; see rope_frequencies)
  - grouped-query attention: each KV head serves num_heads / num_kv_heads query heads
  - SwiGLU MLP: down(silu(gate(x)) * up(x))
  - causal attention with scale 1/sqrt(head_dim)
  - shared exit head (CALM): final norm + lm_head applied to any layer's residual
  - tied embeddings: lm_head reuses model.embed_tokens.weight

Parameter names of LlamaForCausalLM are the module paths here, so state_dict()
keys are the Hugging Face tensor names.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class LlamaConfig:
    vocab_size: int = 1024
    hidden_size: int = 256
    intermediate_size: int = 704
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    max_position_embeddings: int = 256
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    rope_scaling: Optional[dict] = None  # config.json's, with "rope_type" "linear" or "llama3"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2 != 0:
            raise ValueError("head_dim must be even for RoPE")

    def to_hf_dict(self, torch_dtype: str = "float32") -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": None,
            "torch_dtype": torch_dtype,
            "initializer_range": 0.02,
            "use_cache": True,
        }

    @staticmethod
    def from_hf_dict(d: dict) -> "LlamaConfig":
        scaling = d.get("rope_scaling") or None
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind not in ("linear", "llama3"):
                raise ValueError(f"config.json: rope_scaling {scaling!r} is not supported")
            scaling = dict(scaling, rope_type=kind)
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json: hidden_act {d['hidden_act']!r} is not supported")
        if d.get("attention_bias", False) or d.get("mlp_bias", False):
            raise ValueError("config.json: attention_bias/mlp_bias are not supported")
        heads = d["num_attention_heads"]
        if "head_dim" in d and d["head_dim"] * heads != d["hidden_size"]:
            raise ValueError("config.json: head_dim != hidden_size / num_attention_heads is not supported")
        cfg = LlamaConfig(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads", heads),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=d.get("rope_theta", 10000.0),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            bos_token_id=d.get("bos_token_id", 1),
            eos_token_id=d.get("eos_token_id", 2),
            rope_scaling=scaling,
        )
        cfg.validate()
        return cfg


def write_config(cfg: LlamaConfig, path: str, torch_dtype: str) -> None:
    with open(path, "w") as f:
        json.dump(cfg.to_hf_dict(torch_dtype), f, indent=2)
        f.write("\n")


def read_config(path: str) -> LlamaConfig:
    with open(path) as f:
        return LlamaConfig.from_hf_dict(json.load(f))


# ----------------------------------------------------------------------------
# Model


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in at least float32 (as HF does for bf16/f16 models); float64 stays float64.
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        xc = x.to(compute)
        normed = xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_frequencies(head_dim: int, theta: float, scaling: Optional[dict] = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The rotary frequencies f_j = theta^(-2j/head_dim), j < head_dim/2, rescaled:
    linear (factor s): f_j / s. llama3 (factor s, low_freq_factor a, high_freq_factor b,
    original_max_position_embeddings C), with wavelength w_j = 2 pi / f_j: w_j < C/b keeps f_j,
    w_j > C/a gives f_j / s, in between mu = (C / w_j - a) / (b - a) blends
    (1 - mu) f_j / s + mu f_j."""
    f = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=dtype) / head_dim))
    if not scaling:
        return f
    kind, s = scaling["rope_type"], float(scaling["factor"])
    if kind == "linear":
        return f / s
    if kind != "llama3":
        raise ValueError(f"rope_type {kind!r} is not supported")
    a, b = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    context = float(scaling["original_max_position_embeddings"])
    out = []
    for fj in f.tolist():
        w = 2 * math.pi / fj
        if w < context / b:
            out.append(fj)
        elif w > context / a:
            out.append(fj / s)
        else:
            mu = (context / w - a) / (b - a)
            out.append((1 - mu) * fj / s + mu * fj)
    return torch.tensor(out, dtype=dtype)


def rope_tables(head_dim: int, n_positions: int, theta: float, dtype: torch.dtype,
                offset: int = 0, scaling: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (n_positions, head_dim), rotate_half layout."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = rope_frequencies(head_dim, theta, scaling, compute)
    pos = torch.arange(offset, offset + n_positions, dtype=compute)
    angles = torch.outer(pos, inv_freq)  # (T, head_dim/2)
    emb = torch.cat([angles, angles], dim=-1)  # (T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, heads, T, head_dim); cos/sin: (T, head_dim)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(d, cfg.num_attention_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * hd, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        cfg = self.cfg
        hd, nh, nkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        q = self.q_proj(x).view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, nkv, hd).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, nkv, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        group = nh // nkv
        # GQA: query head h reads KV head h // group.
        k = k.repeat_interleave(group, dim=1)  # (B, nh, T, hd)
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # (B, nh, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        # Softmax in at least float32, like HF's eager attention.
        probs = F.softmax(scores.float() if scores.dtype != torch.float64 else scores, dim=-1)
        out = probs.to(v.dtype) @ v  # (B, nh, T, hd)
        out = out.transpose(1, 2).reshape(B, T, nh * hd)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h


class LlamaBody(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.model = LlamaBody(cfg)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False)

    def head_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def exit_head(self, h: torch.Tensor) -> torch.Tensor:
        """Shared exit head: logits = W_head · RMSNorm_final(h), for any layer's residual h."""
        return self.model.norm(h) @ self.head_weight().t()

    def hidden_states(self, tokens: torch.Tensor) -> List[torch.Tensor]:
        """tokens (B, T) -> [h_0 .. h_L], each (B, T, hidden); h_0 = embeddings, h_i pre-norm."""
        T = tokens.shape[1]
        h = self.model.embed_tokens(tokens)
        cos, sin = rope_tables(self.cfg.head_dim, T, self.cfg.rope_theta, h.dtype,
                               scaling=self.cfg.rope_scaling)
        states = [h]
        for layer in self.model.layers:
            h = layer(h, cos, sin)
            states.append(h)
        return states

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the full model (last layer), (B, T, vocab)."""
        return self.exit_head(self.hidden_states(tokens)[-1])

    def hf_state_dict(self) -> Dict[str, torch.Tensor]:
        """Tensors under their Hugging Face names (no lm_head when tied)."""
        return {k: v.detach() for k, v in self.state_dict().items()}


def init_weights(model: LlamaForCausalLM, std: float = 0.02, generator: Optional[torch.Generator] = None,
                 norm_noise: float = 0.0) -> None:
    """Normal(0, std) for embeddings and projections; output projections (o, down) scaled by
    1/sqrt(2L) as in GPT-2 so the residual stream stays O(1) across layers; norms 1 (+ noise)."""
    L = model.cfg.num_hidden_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
                if norm_noise > 0:
                    p.add_(torch.randn(p.shape, generator=generator) * norm_noise)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                p.copy_(torch.randn(p.shape, generator=generator) * (std / math.sqrt(2 * L)))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


# ----------------------------------------------------------------------------
# safetensors, by hand: u64 LE header length, JSON header, raw little-endian bytes.

_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
           "F64": (torch.float64, 8), "I64": (torch.int64, 8), "I32": (torch.int32, 4)}
_TORCH_TO_ST = {v[0]: k for k, v in _DTYPES.items()}
DTYPE_NAMES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TORCH_DTYPE_STRING = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        # numpy has no bf16: reinterpret the 16-bit patterns (rounding already done by .to()).
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()


def save_safetensors(tensors: Dict[str, torch.Tensor], path: str,
                     metadata: Optional[Dict[str, str]] = None) -> None:
    header: Dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors __metadata__ must map strings to strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"{name}: dtype {t.dtype} not supported")
        data = _tensor_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * ((8 - len(head) % 8) % 8)  # pad to 8 bytes with spaces, as HF does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def load_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Returns (tensors in their file dtype, metadata). Checks offsets against the file."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dtype, size = _DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if end - begin != count * size or end > len(data):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {info['data_offsets']}")
        buf = bytearray(data[begin:end])
        if dtype == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16).view(torch.bfloat16) if count else torch.empty(0, dtype=dtype)
        else:
            t = torch.frombuffer(buf, dtype=dtype) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out, meta


def save_checkpoint(model: LlamaForCausalLM, out_dir: str, dtype: torch.dtype, shards: int = 1) -> List[str]:
    """Writes config.json and model.safetensors (or K shards + index). Returns weight files."""
    os.makedirs(out_dir, exist_ok=True)
    write_config(model.cfg, os.path.join(out_dir, "config.json"), TORCH_DTYPE_STRING[dtype])
    tensors = {k: v.to(dtype) for k, v in model.hf_state_dict().items()}
    if shards <= 1:
        save_safetensors(tensors, os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
        return ["model.safetensors"]
    names = sorted(tensors)
    # Split names into K contiguous groups of about equal byte size.
    total = sum(tensors[n].numel() * tensors[n].element_size() for n in names)
    groups: List[List[str]] = [[] for _ in range(shards)]
    acc = 0
    for n in names:
        g = min(shards - 1, int(acc * shards / total))
        groups[g].append(n)
        acc += tensors[n].numel() * tensors[n].element_size()
    files, weight_map = [], {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors({n: tensors[n] for n in g}, os.path.join(out_dir, fname), {"format": "pt"})
        files.append(fname)
        weight_map.update({n: fname for n in g})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files


def load_checkpoint(model_dir: str, dtype: Optional[torch.dtype] = None) -> LlamaForCausalLM:
    """Loads an HF Llama checkpoint dir; weights are widened/converted to `dtype` (default f32)."""
    cfg = read_config(os.path.join(model_dir, "config.json"))
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    tensors: Dict[str, torch.Tensor] = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fname in files:
        tensors.update(load_safetensors(os.path.join(model_dir, fname))[0])
    model = LlamaForCausalLM(cfg)
    expected = set(model.state_dict().keys())
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)  # HF may store a copy; tied means the embedding rules
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"{model_dir}: missing tensors {sorted(missing)}, unexpected {sorted(unexpected)}")
    target = dtype or torch.float32
    model.load_state_dict({k: v.to(target) for k, v in tensors.items()})
    return model.to(target)


# ----------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(text_path: str, model_prefix: str, vocab_size: int,
                    model_type: str = "bpe", max_sentence_length: int = 8192) -> str:
    """Trains a Llama-style sentencepiece model: unk=0, bos=1, eos=2, no pad, byte fallback,
    identity normalisation (no NFKC), digits split. Returns the path of <prefix>.model."""
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(
        input=text_path,
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        byte_fallback=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentence_length=max_sentence_length,
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix + ".model"


def load_tokenizer(path: str):
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=path)
