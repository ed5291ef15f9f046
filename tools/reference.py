#!/usr/bin/python3
"""Independent float64 reference forward of a Hugging Face Llama checkpoint.

  reference.py --model DIR (--prompt TEXT | --tokens 1,5,9 | --prompt-jsonl FILE:K) --out FILE.safetensors
               [--greedy N] [--no-bos] [--compute f64|f32]

Weights are widened from their file dtype to the compute dtype (float64 by default,
so bf16/f16 checkpoints are represented exactly). The dump (safetensors, all F32):
  hidden.{i}  (n_tokens, hidden)  i = 0..L: 0 = embedding output, i = residual after
                                  layer i (pre-norm)
  logits.{i}  (n_tokens, vocab)   i = 1..L: shared exit head (final norm + lm_head) at layer i
and __metadata__ (JSON strings):
  prompt_tokens   "[1, 5, ...]"   the forward's input (BOS prepended to --prompt unless --no-bos)
  greedy_tokens   "[...]"         N greedy tokens of the full model; each step recomputes the
                                  whole sequence (no KV cache); EOS does not stop the loop
  greedy_min_margin               smallest top1 - top2 logit gap along the greedy path
  prompt, compute_dtype, model_dtype, num_hidden_layers
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama as H  # noqa: E402


@torch.no_grad()
def run_reference(model: H.LlamaForCausalLM, tokens, greedy: int):
    x = torch.tensor([tokens], dtype=torch.long)
    states = model.hidden_states(x)
    dump = {f"hidden.{i}": s[0] for i, s in enumerate(states)}
    for i in range(1, len(states)):
        dump[f"logits.{i}"] = model.exit_head(states[i])[0]
    seq = list(tokens)
    generated, min_margin = [], float("inf")
    for _ in range(greedy):
        last = model(torch.tensor([seq], dtype=torch.long))[0, -1]  # (vocab,)
        top2 = torch.topk(last, 2).values
        min_margin = min(min_margin, (top2[0] - top2[1]).item())
        nxt = int(last.argmax())
        generated.append(nxt)
        seq.append(nxt)
    return dump, generated, min_margin


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="text, encoded with the model's tokenizer.model")
    src.add_argument("--tokens", help="comma-separated token ids, used as given")
    src.add_argument("--prompt-jsonl", help="FILE:K = the \"prompt\" of line K (0-based) of a prompt file")
    p.add_argument("--no-bos", action="store_true", help="do not prepend BOS to --prompt")
    p.add_argument("--out", required=True)
    p.add_argument("--greedy", type=int, default=0)
    p.add_argument("--compute", choices=["f64", "f32"], default="f64")
    args = p.parse_args(argv)

    compute = torch.float64 if args.compute == "f64" else torch.float32
    model = H.load_checkpoint(args.model, compute)
    if args.prompt_jsonl:
        path, _, index = args.prompt_jsonl.rpartition(":")
        with open(path, encoding="utf-8") as f:
            args.prompt = json.loads(f.readlines()[int(index)])["prompt"]
    if args.tokens:
        tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
    else:
        sp = H.load_tokenizer(os.path.join(args.model, "tokenizer.model"))
        tokens = ([] if args.no_bos else [model.cfg.bos_token_id]) + sp.encode(args.prompt)
    if not tokens or max(tokens) >= model.cfg.vocab_size or min(tokens) < 0:
        raise SystemExit(f"token ids must lie in [0, {model.cfg.vocab_size})")
    if len(tokens) + args.greedy > model.cfg.max_position_embeddings:
        raise SystemExit("prompt + greedy tokens exceed max_position_embeddings")
    dump, generated, margin = run_reference(model, tokens, args.greedy)
    with open(os.path.join(args.model, "config.json")) as f:
        model_dtype = json.load(f).get("torch_dtype", "")
    meta = {"prompt_tokens": json.dumps(tokens), "greedy_tokens": json.dumps(generated),
            "greedy_min_margin": repr(margin if generated else 0.0), "prompt": args.prompt or "",
            "compute_dtype": "float64" if compute == torch.float64 else "float32",
            "model_dtype": model_dtype, "num_hidden_layers": str(model.cfg.num_hidden_layers)}
    H.save_safetensors({k: v.float() for k, v in dump.items()}, args.out, meta)
    print(f"wrote {args.out}: {len(tokens)} prompt tokens {tokens}, greedy {generated}, "
          f"min margin {margin if generated else 0.0:.4f}")


if __name__ == "__main__":
    main()
