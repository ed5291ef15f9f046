#!/usr/bin/python3
"""Train a Llama-architecture model for early exit (CALM) on a UTF-8 text file.

Every layer's residual goes through the shared exit head (final norm + lm_head);
the loss is sum_i w_i * CE_i with w_i = i / sum_j j (weighted, docs/design.md §2),
1/L (uniform), or only the last layer (last = an ordinary LM).

Outputs a Hugging Face checkpoint dir (config.json, model.safetensors, tokenizer.model)
and the deterministic data splits' prompt files (data/calibration.jsonl, data/test.jsonl).
See tools/README.md for the split rules.

  train.py --data FILE --out DIR [--steps N ...]       train (resumable with --resume)
  train.py --eval-only --model DIR --data FILE          per-layer validation report
"""

import argparse
import os
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="UTF-8 text file")
    p.add_argument("--out", help="checkpoint dir to write (Hugging Face format)")
    p.add_argument("--state", help="training-state file for --resume (default: <out>.train-state.pt, outside the dir)")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    p.add_argument("--eval-only", action="store_true", help="print per-layer validation loss/agreement of --model")
    p.add_argument("--model", help="checkpoint dir for --eval-only")
    p.add_argument("--export-only", action="store_true", help="write --out from --state without training")
    # Shape.
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--vocab", type=int, default=1024, help="sentencepiece vocabulary size (= model vocab_size)")
    p.add_argument("--context", type=int, default=256, help="training window = max_position_embeddings")
    p.add_argument("--tie", action="store_true", help="tie lm_head to the embeddings")
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rms-eps", type=float, default=1e-5)
    # Optimisation.
    p.add_argument("--exit-loss", choices=["weighted", "uniform", "last"], default="weighted")
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of self-distillation: mean over layers i < L of KL(p_L || p_i), p_L detached")
    p.add_argument("--layer-dropout", type=float, default=0.0,
                   help="LayerSkip-style layer dropout: layer l is skipped per sequence with probability "
                        "P * (l - 1) / (L - 1), rising with depth (training only)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="bf16", help="exported weight dtype")
    # Machine.
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--thread-mode", choices=["blas", "torch"], default="blas",
                   help="give the threads to OpenBLAS (torch gets 1) or to torch (OpenBLAS gets 1)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=64, help="validation windows for the periodic eval (0 = all)")
    args = p.parse_args(argv)
    if args.eval_only and not args.model:
        p.error("--eval-only needs --model")
    if not args.eval_only and not args.out:
        p.error("--out is required")
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    # OpenBLAS reads its thread count when the library loads, so set it before importing torch.
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads if ARGS.thread_mode == "blas" else 1)
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads if ARGS.thread_mode == "torch" else 1)

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama as H  # noqa: E402

if ARGS is not None:
    torch.set_num_threads(ARGS.threads if ARGS.thread_mode == "torch" else 1)

# ----------------------------------------------------------------------------
# Deterministic splits (documented in tools/README.md)

SPLIT_BUCKETS = (("train", 900), ("validation", 950), ("calibration", 975), ("test", 1000))
PROMPT_REFERENCE_LINES = 4
PROMPT_CONTEXT_LINES = 4  # keeps prompt + a generation well inside a 256-token context


def split_blocks(text: str):
    """Blocks = runs of non-blank lines separated by blank lines, in file order."""
    text = text.replace("\r\n", "\n")
    return [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


def block_split(block: str) -> str:
    """sha256 of the block's UTF-8 bytes, first 8 hex digits mod 1000 -> bucket."""
    bucket = int(hashlib.sha256(block.encode("utf-8")).hexdigest()[:8], 16) % 1000
    for name, upper in SPLIT_BUCKETS:
        if bucket < upper:
            return name
    raise AssertionError


def make_splits(text: str):
    blocks = split_blocks(text)
    splits = [block_split(b) for b in blocks]
    return blocks, splits


def split_text(blocks, splits, name) -> str:
    return "\n\n".join(b for b, s in zip(blocks, splits) if s == name) + "\n"


def make_prompts(blocks, splits, name):
    """One prompt per block of split `name` that has >= 2 lines and a predecessor:
    prompt = last PROMPT_CONTEXT_LINES lines of the previous block + blank line + first
    line of the block + newline, reference = the block's next lines (at most
    PROMPT_REFERENCE_LINES)."""
    out = []
    for k, (b, s) in enumerate(zip(blocks, splits)):
        lines = b.split("\n")
        if s != name or k == 0 or len(lines) < 2:
            continue
        context = "\n".join(blocks[k - 1].split("\n")[-PROMPT_CONTEXT_LINES:])
        out.append({"prompt": context + "\n\n" + lines[0] + "\n",
                    "reference": "\n".join(lines[1:1 + PROMPT_REFERENCE_LINES]),
                    "block": k})
    return out


def write_jsonl(rows, path):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------
# Data


def encode_stream(sp, text: str) -> torch.Tensor:
    return torch.tensor(sp.encode(text), dtype=torch.long)


def sample_batch(stream: torch.Tensor, batch: int, context: int, bos: int, gen: torch.Generator):
    """Random windows; every sequence starts with BOS as prompts do at inference.
    inputs = [BOS, s[p], .., s[p+T-2]], targets = [s[p], .., s[p+T-1]]."""
    starts = torch.randint(0, len(stream) - context, (batch,), generator=gen)
    tgt = torch.stack([stream[s:s + context] for s in starts.tolist()])  # (B, T)
    inp = torch.cat([torch.full((batch, 1), bos, dtype=torch.long), tgt[:, :-1]], dim=1)
    return inp, tgt


def eval_windows(stream: torch.Tensor, context: int, bos: int, limit: int = 0):
    """Non-overlapping windows over the whole stream, in order (deterministic)."""
    n = (len(stream) - 1) // context
    if limit:
        n = min(n, limit)
    tgt = torch.stack([stream[i * context:(i + 1) * context] for i in range(n)])
    inp = torch.cat([torch.full((n, 1), bos, dtype=torch.long), tgt[:, :-1]], dim=1)
    return inp, tgt


def layer_weights(mode: str, L: int):
    if mode == "weighted":
        total = L * (L + 1) / 2
        return [i / total for i in range(1, L + 1)]
    if mode == "uniform":
        return [1.0 / L] * L
    return [0.0] * (L - 1) + [1.0]


def hidden_states_with_dropout(model, tokens, p_max: float, gen: torch.Generator):
    """model.hidden_states with LayerSkip's layer dropout (Elhoushi et al. 2024): each sequence
    skips layer l (its residual passes unchanged) with probability p_max * (l - 1) / (L - 1), so
    early layers always run and the later ones learn to refine rather than to carry the model."""
    if p_max <= 0.0:
        return model.hidden_states(tokens)
    B, T = tokens.shape
    L = model.cfg.num_hidden_layers
    h = model.model.embed_tokens(tokens)
    cos, sin = H.rope_tables(model.cfg.head_dim, T, model.cfg.rope_theta, h.dtype, scaling=model.cfg.rope_scaling)
    states = [h]
    for l, layer in enumerate(model.model.layers, start=1):
        p = p_max * (l - 1) / max(1, L - 1)
        out = layer(h, cos, sin)
        if p > 0.0:
            keep = (torch.rand(B, 1, 1, generator=gen) >= p).to(h.dtype)
            out = h + keep * (out - h)
        h = out
        states.append(h)
    return states


def training_loss(model, inp, tgt, weights, distill: float = 0.0, layer_dropout: float = 0.0, gen=None):
    """sum_i w_i CE_i (+ distill * mean_{i<L} KL(p_L || p_i) with p_L detached: every exit is pulled
    toward the last layer's distribution, which is what an exit must reproduce)."""
    states = hidden_states_with_dropout(model, inp, layer_dropout, gen)
    L = len(weights)
    total, per_layer = 0.0, []
    last_logp = None
    if distill > 0.0:
        last_logp = F.log_softmax(model.exit_head(states[L]).detach().reshape(-1, model.cfg.vocab_size), -1)
    for i, w in enumerate(weights, start=1):
        if w == 0.0 and (last_logp is None or i == L):
            per_layer.append(float("nan"))
            continue
        logits = model.exit_head(states[i]).reshape(-1, model.cfg.vocab_size)
        ce = F.cross_entropy(logits, tgt.reshape(-1))
        total = total + w * ce
        if last_logp is not None and i < L:
            kl = F.kl_div(F.log_softmax(logits, -1), last_logp, log_target=True, reduction="batchmean")
            total = total + distill / (L - 1) * kl
        per_layer.append(ce.item())
    return total, per_layer


@torch.no_grad()
def layer_report(model, inp, tgt, batch: int = 8):
    """Per-layer mean CE on targets and top-1 agreement with the last layer's argmax."""
    L = model.cfg.num_hidden_layers
    ce_sum = torch.zeros(L, dtype=torch.float64)
    agree = torch.zeros(L, dtype=torch.float64)
    n_tok = 0
    model.eval()
    for b in range(0, len(inp), batch):
        x, y = inp[b:b + batch], tgt[b:b + batch]
        states = model.hidden_states(x)
        logits = [model.exit_head(states[i]) for i in range(1, L + 1)]
        top_last = logits[-1].argmax(-1)
        for i, lg in enumerate(logits):
            ce_sum[i] += F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), y.reshape(-1), reduction="sum").item()
            agree[i] += (lg.argmax(-1) == top_last).sum().item()
        n_tok += y.numel()
    model.train()
    return (ce_sum / n_tok).tolist(), (agree / n_tok).tolist(), n_tok


def format_report(ce, agree, n_tok):
    lines = [f"per-layer validation ({n_tok} tokens):", "layer  val_loss  top1_agree_with_last"]
    for i, (c, a) in enumerate(zip(ce, agree), start=1):
        lines.append(f"{i:5d}  {c:8.4f}  {a:8.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# Main


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    floor = args.lr * args.min_lr_ratio
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * progress))


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def export(model, args, work_dir, meta):
    out = args.out
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    H.save_checkpoint(model, out, H.DTYPE_NAMES[args.dtype])
    shutil.copyfile(os.path.join(work_dir, "tokenizer.model"), os.path.join(out, "tokenizer.model"))
    for name in ("calibration.jsonl", "test.jsonl", "splits.json"):
        shutil.copyfile(os.path.join(work_dir, name), os.path.join(out, "data", name))
    with open(os.path.join(out, "data", "training.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"exported {out}", flush=True)


def write_split_files(text, source_path, out_dir):
    """calibration.jsonl, test.jsonl and splits.json into out_dir; returns blocks per split."""
    blocks, splits = make_splits(text)
    for name in ("calibration", "test"):
        write_jsonl(make_prompts(blocks, splits, name), os.path.join(out_dir, f"{name}.jsonl"))
    counts = {name: splits.count(name) for name, _ in SPLIT_BUCKETS}
    with open(os.path.join(out_dir, "splits.json"), "w") as f:
        json.dump({"source": os.path.basename(source_path),
                   "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                   "rule": "blocks separated by blank lines; sha256(block)[:8 hex] mod 1000: "
                           "<900 train, <950 validation, <975 calibration, else test",
                   "prompt_rule": f"last {PROMPT_CONTEXT_LINES} lines of the previous block + blank line + "
                                  f"first line of the block; reference = next {PROMPT_REFERENCE_LINES} lines",
                   "blocks": counts,
                   "prompts": {n: len(make_prompts(blocks, splits, n)) for n in ("calibration", "test")}},
                  f, indent=2)
        f.write("\n")
    return counts


def prepare_data(args, work_dir):
    """Splits, tokenizer (trained on the train split), prompt files. Deterministic."""
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    blocks, splits = make_splits(text)
    os.makedirs(work_dir, exist_ok=True)
    train_txt = os.path.join(work_dir, "train.txt")
    with open(train_txt, "w", encoding="utf-8") as f:
        f.write(split_text(blocks, splits, "train"))
    tok_path = os.path.join(work_dir, "tokenizer.model")
    if not os.path.exists(tok_path):
        H.train_tokenizer(train_txt, os.path.join(work_dir, "tokenizer"), args.vocab)
    counts = write_split_files(text, args.data, work_dir)
    sp = H.load_tokenizer(tok_path)
    streams = {name: encode_stream(sp, split_text(blocks, splits, name)) for name in ("train", "validation")}
    return sp, streams, counts


def eval_only(args):
    model = H.load_checkpoint(args.model, torch.float32)
    sp = H.load_tokenizer(os.path.join(args.model, "tokenizer.model"))
    with open(args.data, encoding="utf-8") as f:
        blocks, splits = make_splits(f.read())
    val = encode_stream(sp, split_text(blocks, splits, "validation"))
    ctx = min(args.context, model.cfg.max_position_embeddings)
    inp, tgt = eval_windows(val, ctx, model.cfg.bos_token_id, args.eval_windows)
    ce, agree, n = layer_report(model, inp, tgt)
    print(format_report(ce, agree, n))
    print(json.dumps({"val_loss": ce, "top1_agree_with_last": agree, "tokens": n}))


def main(args):
    if args.eval_only:
        return eval_only(args)
    state_path = args.state or args.out.rstrip("/") + ".train-state.pt"
    work_dir = state_path + ".work"
    seed_all(args.seed)
    sp, streams, counts = prepare_data(args, work_dir)
    if sp.get_piece_size() != args.vocab:
        raise SystemExit(f"tokenizer has {sp.get_piece_size()} pieces, expected --vocab {args.vocab}")
    print(f"splits (blocks): {counts}; tokens: train {len(streams['train'])}, "
          f"validation {len(streams['validation'])}", flush=True)

    cfg = H.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                        num_hidden_layers=args.layers, num_attention_heads=args.heads,
                        num_key_value_heads=args.kv_heads, max_position_embeddings=args.context,
                        rms_norm_eps=args.rms_eps, rope_theta=args.rope_theta, tie_word_embeddings=args.tie,
                        bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id())
    model = H.LlamaForCausalLM(cfg)
    H.init_weights(model, std=0.02, generator=torch.Generator().manual_seed(args.seed))
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(args.seed + 1)
    step, elapsed, history = 0, 0.0, []
    if args.resume or args.export_only:
        st = torch.load(state_path)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        step, elapsed, history = st["step"], st["elapsed"], st["history"]
        print(f"resumed from {state_path} at step {step}", flush=True)

    weights = layer_weights(args.exit_loss, cfg.num_hidden_layers)
    val_inp, val_tgt = eval_windows(streams["validation"], args.context, cfg.bos_token_id, args.eval_windows)
    tokens_per_step = args.batch * args.context
    print(f"params {n_params} ({n_params / 1e6:.2f} M), exit loss {args.exit_loss} weights "
          f"{[round(w, 4) for w in weights]}, distill {args.distill}, layer dropout {args.layer_dropout}, "
          f"{tokens_per_step} tokens/step, {args.steps} steps, "
          f"threads {args.threads} ({args.thread_mode})", flush=True)

    def save_state():
        tmp = state_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                    "step": step, "elapsed": elapsed, "history": history, "args": vars(args)}, tmp)
        os.replace(tmp, state_path)

    model.train()
    t_window, tok_window = time.time(), 0
    while step < args.steps and not args.export_only:
        t0 = time.time()
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        inp, tgt = sample_batch(streams["train"], args.batch, args.context, cfg.bos_token_id, gen)
        loss, per_layer = training_loss(model, inp, tgt, weights, args.distill, args.layer_dropout, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        elapsed += time.time() - t0
        tok_window += tokens_per_step
        if step % args.log_every == 0 or step == args.steps:
            rate = tok_window / max(1e-9, time.time() - t_window)
            eta = (args.steps - step) * tokens_per_step / max(rate, 1e-9)
            print(f"step {step}/{args.steps} loss {loss.item():.4f} last {per_layer[-1]:.4f} "
                  f"first {per_layer[0]:.4f} lr {lr:.2e} {rate:.0f} tok/s elapsed {elapsed / 60:.1f} min "
                  f"ETA {eta / 60:.1f} min", flush=True)
            t_window, tok_window = time.time(), 0
        if step % args.eval_every == 0 or step == args.steps:
            ce, agree, n = layer_report(model, val_inp, val_tgt)
            history.append({"step": step, "val_loss": ce, "top1_agree_with_last": agree})
            print(f"eval step {step}: val loss per layer " + " ".join(f"{c:.3f}" for c in ce) +
                  " | agree " + " ".join(f"{a:.3f}" for a in agree), flush=True)
            t_window, tok_window = time.time(), 0
        if step % args.save_every == 0 or step == args.steps:
            save_state()

    meta = {"command": "tools/train.py " + " ".join(sys.argv[1:]), "steps": step,
            "train_seconds": round(elapsed, 1), "params": n_params, "tokens_seen": step * tokens_per_step,
            "split_blocks": counts, "train_tokens": len(streams["train"]), "history": history}
    export(model, args, work_dir, meta)


if __name__ == "__main__":
    main(ARGS)
