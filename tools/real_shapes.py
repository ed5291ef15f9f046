#!/usr/bin/python3
"""Random checkpoints at the exact shapes of published Llama 3.x models, and their float64
reference dump, computed one layer at a time so that an 8B shape fits in memory.

  real_shapes.py --shape llama-3.2-1b|llama-3.1-8b --out DIR [--seed 0] [--greedy 4]
                 [--prompt-tokens 12] [--shard-bytes N]

DIR gets what the Hugging Face repository holds, with random bf16 weights:
  config.json                       every key the published config carries
  model-0000k-of-0000K.safetensors  shards of at most --shard-bytes (default 1 GiB)
  model.safetensors.index.json      weight_map and metadata.total_size
and reference.safetensors, in the format of tools/reference.py (hidden.{i}, logits.{i},
__metadata__ prompt_tokens / greedy_tokens / greedy_min_margin), for a prompt of
--prompt-tokens ids (<|begin_of_text|> 128000, then seeded random ids). No tokenizer is
written: the reference works on ids.

Weights are drawn as in tools/make_checkpoint.py (activations O(1) over depth, logits spread
out): q/k/v/o/gate/up ~ N(0, 1/hidden), down ~ N(0, 1/intermediate), embeddings and lm_head
~ N(0, (3/sqrt(hidden))^2), norm weights 1 + N(0, 0.1^2); one tensor at a time, so the
writer never holds the model. The reference reads the shards through a memory map and
widens each layer to float64 only while it runs (peak memory: the embedding and lm_head in
float64 plus one layer).

A DIR that already holds a complete checkpoint of the same shape, seed and tool version
(stamp file .real_shapes.json) is left as it is.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama as H  # noqa: E402

VERSION = 1

# The published config.json files (meta-llama/Llama-3.2-1B, meta-llama/Llama-3.1-8B), key for key.
SHAPES = {
    "llama-3.2-1b": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 128256,
    },
    "llama-3.1-8b": {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
    },
}

LAYER_TENSORS = ["input_layernorm", "mlp.down_proj", "mlp.gate_proj", "mlp.up_proj",
                 "post_attention_layernorm", "self_attn.k_proj", "self_attn.o_proj",
                 "self_attn.q_proj", "self_attn.v_proj"]


def tensor_shapes(cfg: dict):
    """(name, shape) of every tensor, in the order HF's files list them."""
    d, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg.get(
        "head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"input_layernorm": [d], "post_attention_layernorm": [d],
              "mlp.down_proj": [d, inter], "mlp.gate_proj": [inter, d], "mlp.up_proj": [inter, d],
              "self_attn.k_proj": [kv, d], "self_attn.v_proj": [kv, d],
              "self_attn.q_proj": [q, d], "self_attn.o_proj": [d, q]}
    out = [("model.embed_tokens.weight", [cfg["vocab_size"], d])]
    for i in range(cfg["num_hidden_layers"]):
        out += [(f"model.layers.{i}.{t}.weight", shapes[t]) for t in LAYER_TENSORS]
    out.append(("model.norm.weight", [d]))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", [cfg["vocab_size"], d]))
    return out


def random_tensor(name: str, shape, cfg: dict, g: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * torch.randn(shape, generator=g)).to(torch.bfloat16)
    fan_in = cfg["intermediate_size"] if "down_proj" in name else cfg["hidden_size"]
    std = 3 / math.sqrt(cfg["hidden_size"]) if ("embed" in name or "lm_head" in name) else 1 / math.sqrt(fan_in)
    out = torch.empty(shape, dtype=torch.bfloat16)
    rows = max(1, (1 << 24) // max(1, shape[-1]))  # draw in chunks of ~16M values
    flat = out.view(shape[0], -1)
    for r in range(0, shape[0], rows):
        n = min(rows, shape[0] - r)
        flat[r:r + n] = (std * torch.randn((n, flat.shape[1]), generator=g)).to(torch.bfloat16)
    return out


def write_checkpoint(cfg: dict, out: str, seed: int, shard_bytes: int) -> None:
    specs = tensor_shapes(cfg)
    sizes = [2 * math.prod(s) for _, s in specs]
    shards, cur, acc = [[]], 0, 0
    for (name, shape), size in zip(specs, sizes):
        if shards[-1] and acc + size > shard_bytes:
            shards.append([])
            acc = 0
        shards[-1].append((name, shape, size))
        acc += size
    g = torch.Generator().manual_seed(seed)
    weight_map = {}
    for k, group in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, size in group:
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = fname
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        head += b" " * ((8 - len(head) % 8) % 8)
        tmp = os.path.join(out, fname + ".part")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for name, shape, _ in group:
                f.write(random_tensor(name, shape, cfg, g).view(torch.int16).numpy().tobytes())
        os.replace(tmp, os.path.join(out, fname))
        print(f"wrote {fname} ({offset / 2**30:.2f} GiB)", flush=True)
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


class MappedCheckpoint:
    """Tensors of a sharded bf16 checkpoint, read through memory maps, widened on request."""

    def __init__(self, out: str):
        with open(os.path.join(out, "model.safetensors.index.json")) as f:
            weight_map = json.load(f)["weight_map"]
        self.entries = {}
        for fname in sorted(set(weight_map.values())):
            path = os.path.join(out, fname)
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            data = np.memmap(path, dtype=np.uint16, mode="r", offset=8 + n)
            for name, e in header.items():
                if name != "__metadata__":
                    b, end = e["data_offsets"]
                    self.entries[name] = (data[b // 2:end // 2], e["shape"])

    def f64(self, name: str, rows=None) -> torch.Tensor:
        bits, shape = self.entries[name]
        if rows is not None:  # only these rows of a matrix
            bits = bits.reshape(shape)[rows]
            shape = [len(rows)] + shape[1:]
        wide = (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)
        return torch.from_numpy(wide.reshape(shape)).double()


@torch.no_grad()
def reference(cfg: dict, out: str, tokens, greedy: int):
    hcfg = H.LlamaConfig.from_hf_dict(cfg)
    ck = MappedCheckpoint(out)
    head = ck.f64("model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight")
    norm = H.RMSNorm(hcfg.hidden_size, hcfg.rms_norm_eps).double()
    norm.weight.copy_(ck.f64("model.norm.weight"))
    layer = H.DecoderLayer(hcfg).double()

    def forward(seq, keep):
        """Residual states [h_0..h_L] of seq (T, hidden) if keep, else only h_L."""
        h = ck.f64("model.embed_tokens.weight", rows=list(seq))[None]
        cos, sin = H.rope_tables(hcfg.head_dim, len(seq), hcfg.rope_theta, torch.float64,
                                 scaling=hcfg.rope_scaling)
        states = [h[0]] if keep else []
        for i in range(hcfg.num_hidden_layers):
            layer.load_state_dict({f"{t}.weight": ck.f64(f"model.layers.{i}.{t}.weight")
                                   for t in LAYER_TENSORS})
            h = layer(h, cos, sin)
            if keep:
                states.append(h[0])
        return states if keep else [h[0]]

    states = forward(tokens, keep=True)
    dump = {f"hidden.{i}": s for i, s in enumerate(states)}
    for i in range(1, len(states)):
        dump[f"logits.{i}"] = norm(states[i]) @ head.t()
    seq, generated, margin = list(tokens), [], float("inf")
    last = dump[f"logits.{hcfg.num_hidden_layers}"][-1]
    for step in range(greedy):
        if step > 0:
            last = norm(forward(seq, keep=False)[0][-1]) @ head.t()
        top2 = torch.topk(last, 2).values
        margin = min(margin, (top2[0] - top2[1]).item())
        generated.append(int(last.argmax()))
        seq.append(generated[-1])
    meta = {"prompt_tokens": json.dumps(list(tokens)), "greedy_tokens": json.dumps(generated),
            "greedy_min_margin": repr(margin if generated else 0.0), "prompt": "",
            "compute_dtype": "float64", "model_dtype": "bfloat16",
            "num_hidden_layers": str(hcfg.num_hidden_layers)}
    H.save_safetensors({k: v.float() for k, v in dump.items()},
                       os.path.join(out, "reference.safetensors"), meta)
    return generated, margin


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=12)
    p.add_argument("--shard-bytes", type=int, default=1 << 30)
    args = p.parse_args(argv)
    cfg = SHAPES[args.shape]
    stamp = {"version": VERSION, "shape": args.shape, "seed": args.seed, "greedy": args.greedy,
             "prompt_tokens": args.prompt_tokens, "shard_bytes": args.shard_bytes}
    stamp_file = os.path.join(args.out, ".real_shapes.json")
    if os.path.exists(stamp_file):
        with open(stamp_file) as f:
            if json.load(f) == stamp:
                print(f"{args.out}: up to date")
                return
        os.remove(stamp_file)
    os.makedirs(args.out, exist_ok=True)
    write_checkpoint(cfg, args.out, args.seed, args.shard_bytes)
    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = [cfg["bos_token_id"]] + torch.randint(0, 128000, (args.prompt_tokens - 1,), generator=g).tolist()
    generated, margin = reference(cfg, args.out, tokens, args.greedy)
    with open(stamp_file, "w") as f:
        json.dump(stamp, f)
    print(f"{args.out}: prompt {tokens}, greedy {generated}, min margin {margin:.4f}")


if __name__ == "__main__":
    main()
