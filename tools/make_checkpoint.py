#!/usr/bin/python3
"""Write a random Hugging Face-format Llama checkpoint of any shape and dtype.

  make_checkpoint.py --out DIR [--hidden 64 --layers 2 --heads 4 --kv-heads 2
                     --intermediate 160 --vocab 320 --context 128 --dtype f32|bf16|f16
                     --tie --seed 0 --shards K --text CORPUS --rope-theta T
                     --rope-scaling '{"rope_type": "llama3", "factor": 8, ...}']

DIR gets config.json, model.safetensors (or model-0000k-of-0000K.safetensors +
model.safetensors.index.json with --shards K > 1) and tokenizer.model, a
sentencepiece model trained on --text with exactly --vocab pieces.

Initialisation keeps activations O(1) over layers and the logits spread out (clear
top-1 margins, so greedy decoding is stable across float precisions):
  q/k/v/gate/up ~ N(0, 1/hidden), o ~ N(0, 1/(heads*head_dim)), down ~ N(0, 1/intermediate),
  embeddings and lm_head ~ N(0, (3/sqrt(hidden))^2)  (logit std about 3),
  norm weights 1 + N(0, 0.1^2) so that wrong use of the norm weights shows up.
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama as H  # noqa: E402

DEFAULT_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                            "tokenizer_corpus.txt")


def random_init(model: H.LlamaForCausalLM, seed: int, norm_noise: float = 0.1) -> None:
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    stds = {
        "q_proj": 1 / math.sqrt(cfg.hidden_size), "k_proj": 1 / math.sqrt(cfg.hidden_size),
        "v_proj": 1 / math.sqrt(cfg.hidden_size), "gate_proj": 1 / math.sqrt(cfg.hidden_size),
        "up_proj": 1 / math.sqrt(cfg.hidden_size), "o_proj": 1 / math.sqrt(cfg.hidden_size),
        "down_proj": 1 / math.sqrt(cfg.intermediate_size),
        "embed_tokens": 3 / math.sqrt(cfg.hidden_size), "lm_head": 3 / math.sqrt(cfg.hidden_size),
    }
    with torch.no_grad():
        # Named order is fixed by the module structure, so a seed gives the same weights.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + norm_noise * torch.randn(p.shape, generator=g))
                continue
            key = name.split(".")[-2]
            p.copy_(stds[key] * torch.randn(p.shape, generator=g))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (MHA)")
    p.add_argument("--intermediate", type=int, default=160)
    p.add_argument("--vocab", type=int, default=320)
    p.add_argument("--context", type=int, default=128, help="max_position_embeddings")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rope-scaling", type=json.loads, default=None,
                   help="config.json's rope_scaling, as JSON (rope_type linear or llama3)")
    p.add_argument("--rms-eps", type=float, default=1e-5)
    p.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    p.add_argument("--tie", action="store_true", help="tie_word_embeddings (no lm_head.weight)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--text", default=DEFAULT_TEXT, help="corpus for the tokenizer")
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok = H.train_tokenizer(args.text, os.path.join(tmp, "tokenizer"), args.vocab)
        shutil.copyfile(tok, os.path.join(args.out, "tokenizer.model"))
    sp = H.load_tokenizer(os.path.join(args.out, "tokenizer.model"))
    assert sp.get_piece_size() == args.vocab, "tokenizer size must equal vocab_size"

    cfg = H.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.kv_heads or args.heads,
                        max_position_embeddings=args.context, rms_norm_eps=args.rms_eps,
                        rope_theta=args.rope_theta, tie_word_embeddings=args.tie,
                        bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id(),
                        rope_scaling=H.LlamaConfig.from_hf_dict(
                            {"vocab_size": 1, "hidden_size": 2, "intermediate_size": 1,
                             "num_hidden_layers": 1, "num_attention_heads": 1,
                             "rope_scaling": args.rope_scaling}).rope_scaling)
    model = H.LlamaForCausalLM(cfg)
    random_init(model, args.seed)
    files = H.save_checkpoint(model, args.out, H.DTYPE_NAMES[args.dtype], shards=args.shards)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n} parameters, {args.dtype}, files {files} + config.json, tokenizer.model")


if __name__ == "__main__":
    main()
