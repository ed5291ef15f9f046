#!/usr/bin/python3
"""Tests of the Python tooling (tools/*.py). Run: /usr/bin/python3 -m unittest tests/unit/test_python_tools.py

The model is checked against a second, deliberately naive implementation: one token at a
time with an explicit KV cache, RoPE from per-element cos/sin, loops over heads. Agreement
in float64 to 1e-10 means the batched forward's causal mask, GQA mapping and RoPE
positions match the token-by-token definition.
"""

import json
import math
import os
import struct
import sys
import tempfile
import unittest

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import hf_llama as H  # noqa: E402
import train  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def naive_forward(model: H.LlamaForCausalLM, tokens):
    """Token-by-token float64 forward with a KV cache; returns [h_0..h_L] as (T, hidden)."""
    cfg = model.cfg
    sd = {k: v.double() for k, v in model.state_dict().items()}
    hd, nh, nkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads

    def rms(x, w):
        return x / math.sqrt(float((x * x).mean()) + cfg.rms_norm_eps) * w

    def rope(vec, pos):  # vec (hd,)
        out = vec.clone()
        for j in range(hd // 2):
            angle = pos / (cfg.rope_theta ** (2 * j / hd))
            c, s = math.cos(angle), math.sin(angle)
            a, b = float(vec[j]), float(vec[j + hd // 2])
            out[j] = a * c - b * s
            out[j + hd // 2] = b * c + a * s
        return out

    L = cfg.num_hidden_layers
    cache_k = [[] for _ in range(L)]
    cache_v = [[] for _ in range(L)]
    states = [[] for _ in range(L + 1)]
    for pos, tok in enumerate(tokens):
        h = sd["model.embed_tokens.weight"][tok].clone()
        states[0].append(h.clone())
        for i in range(L):
            p = f"model.layers.{i}."
            x = rms(h, sd[p + "input_layernorm.weight"])
            q = sd[p + "self_attn.q_proj.weight"] @ x
            k = sd[p + "self_attn.k_proj.weight"] @ x
            v = sd[p + "self_attn.v_proj.weight"] @ x
            cache_k[i].append(torch.cat([rope(k[g * hd:(g + 1) * hd], pos) for g in range(nkv)]))
            cache_v[i].append(v)
            att = torch.zeros(nh * hd, dtype=torch.float64)
            for head in range(nh):
                g = head // (nh // nkv)
                qh = rope(q[head * hd:(head + 1) * hd], pos)
                scores = torch.tensor([float(qh @ kk[g * hd:(g + 1) * hd]) / math.sqrt(hd) for kk in cache_k[i]],
                                      dtype=torch.float64)
                w = torch.softmax(scores, 0)
                att[head * hd:(head + 1) * hd] = sum(w[t] * cache_v[i][t][g * hd:(g + 1) * hd]
                                                     for t in range(len(w)))
            h = h + sd[p + "self_attn.o_proj.weight"] @ att
            x = rms(h, sd[p + "post_attention_layernorm.weight"])
            gate = sd[p + "mlp.gate_proj.weight"] @ x
            up = sd[p + "mlp.up_proj.weight"] @ x
            h = h + sd[p + "mlp.down_proj.weight"] @ (gate / (1 + torch.exp(-gate)) * up)
            states[i + 1].append(h.clone())
    return [torch.stack(s) for s in states]


class ModelTest(unittest.TestCase):
    def make(self, tie, kv):
        cfg = H.LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=kv, max_position_embeddings=32,
                            tie_word_embeddings=tie)
        model = H.LlamaForCausalLM(cfg)
        torch.manual_seed(7)
        for p in model.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape) * 0.4 + (1.0 if p.dim() == 1 else 0.0))
        return model.double()

    def test_matches_naive_token_by_token(self):
        tokens = [1, 5, 9, 3, 30, 2, 7]
        for tie, kv in ((True, 2), (False, 4), (False, 1)):
            model = self.make(tie, kv)
            with torch.no_grad():
                batched = model.hidden_states(torch.tensor([tokens]))
            naive = naive_forward(model, tokens)
            for i, (a, b) in enumerate(zip(batched, naive)):
                self.assertLess((a[0] - b).abs().max().item(), 1e-10, f"layer {i} tie={tie} kv={kv}")

    def test_exit_head_uses_final_norm_and_head(self):
        model = self.make(False, 2)
        h = torch.randn(3, 16, dtype=torch.float64)
        w = model.model.norm.weight
        expect = (h / torch.sqrt((h * h).mean(-1, keepdim=True) + model.cfg.rms_norm_eps) * w) @ model.lm_head.weight.t()
        self.assertLess((model.exit_head(h) - expect).abs().max().item(), 1e-12)


class TrainingLossTest(unittest.TestCase):
    """train.training_loss against the formulas written out by hand."""

    def setUp(self):
        self.model = ModelTest().make(False, 2)
        self.inp = torch.tensor([[1, 5, 9, 3], [2, 7, 30, 4]])
        self.tgt = torch.tensor([[5, 9, 3, 8], [7, 30, 4, 11]])

    def test_weighted_ce_plus_distillation(self):
        weights = train.layer_weights("weighted", 2)
        with torch.no_grad():
            total, _ = train.training_loss(self.model, self.inp, self.tgt, weights, distill=0.5)
            states = self.model.hidden_states(self.inp)
            z = [self.model.exit_head(states[i]).reshape(-1, 37) for i in (1, 2)]
            ce = [torch.nn.functional.cross_entropy(x, self.tgt.reshape(-1)) for x in z]
            p_last = torch.softmax(z[1], -1)
            # KL(p_L || p_1) = sum_v p_L (log p_L - log p_1), averaged over positions.
            kl = (p_last * (torch.log_softmax(z[1], -1) - torch.log_softmax(z[0], -1))).sum(-1).mean()
            expect = weights[0] * ce[0] + weights[1] * ce[1] + 0.5 * kl
        self.assertAlmostEqual(total.item(), expect.item(), places=10)
        with torch.no_grad():
            plain, _ = train.training_loss(self.model, self.inp, self.tgt, weights)
        self.assertAlmostEqual(plain.item(), (weights[0] * ce[0] + weights[1] * ce[1]).item(), places=10)

    def test_layer_dropout(self):
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():
            full = self.model.hidden_states(self.inp)
            same = train.hidden_states_with_dropout(self.model, self.inp, 0.0, gen)
            # p_max 1: layer 1 always runs (p = 0), the last layer is always skipped (p = 1).
            dropped = train.hidden_states_with_dropout(self.model, self.inp, 1.0, gen)
        for a, b in zip(full, same):
            self.assertTrue(torch.equal(a, b))
        self.assertTrue(torch.allclose(dropped[1], full[1], atol=1e-12))
        self.assertTrue(torch.equal(dropped[2], dropped[1]))


class SafetensorsTest(unittest.TestCase):
    def test_round_trip_and_layout(self):
        tensors = {"b": torch.tensor([[1.0, -2.5], [3.0, 0.15625]]), "a": torch.arange(3, dtype=torch.float32)}
        with tempfile.TemporaryDirectory() as tmp:
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                path = os.path.join(tmp, "x.safetensors")
                H.save_safetensors({k: v.to(dtype) for k, v in tensors.items()}, path, {"k": "v"})
                with open(path, "rb") as f:
                    raw = f.read()
                (n,) = struct.unpack("<Q", raw[:8])
                self.assertEqual(n % 8, 0)
                header = json.loads(raw[8:8 + n])
                self.assertEqual(header["__metadata__"], {"k": "v"})
                self.assertEqual(header["a"]["data_offsets"][0], 0)  # sorted: "a" first
                self.assertEqual(len(raw), 8 + n + header["b"]["data_offsets"][1])
                back, meta = H.load_safetensors(path)
                for k in tensors:
                    self.assertEqual(back[k].dtype, dtype)
                    self.assertTrue(torch.equal(back[k].float(), tensors[k]))  # all values exact in 16 bits

    def test_bf16_bits(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.safetensors")
            H.save_safetensors({"x": torch.tensor([1.0, -2.0]).to(torch.bfloat16)}, path)
            with open(path, "rb") as f:
                raw = f.read()
            (n,) = struct.unpack("<Q", raw[:8])
            self.assertEqual(raw[8 + n:], bytes([0x80, 0x3F, 0x00, 0xC0]))  # 0x3F80, 0xC000 little-endian


class RopeScalingTest(unittest.TestCase):
    def test_frequencies_by_hand(self):
        # head_dim 16, theta 500000: wavelengths 2 pi / f_j = 6.28, 32.40, 167.4, ...
        base = H.rope_frequencies(16, 500000.0)
        self.assertAlmostEqual(base[1].item(), 500000 ** (-1 / 8), places=15)
        linear = H.rope_frequencies(16, 500000.0, {"rope_type": "linear", "factor": 4.0})
        self.assertTrue(torch.allclose(linear, base / 4, rtol=1e-15, atol=0))
        llama3 = H.rope_frequencies(16, 500000.0, {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
        self.assertEqual(llama3[0].item(), base[0].item())  # wavelength 6.28 < 64/4: kept
        mu = (64 / 32.4005 - 1) / 3  # wavelength 32.40 between 16 and 64: blended
        self.assertAlmostEqual((llama3[1] / base[1]).item(), (1 - mu) / 8 + mu, places=4)
        self.assertTrue(torch.allclose(llama3[2:], base[2:] / 8, rtol=1e-15, atol=0))
        with self.assertRaises(ValueError):
            H.LlamaConfig.from_hf_dict({"vocab_size": 4, "hidden_size": 4, "intermediate_size": 4,
                                        "num_hidden_layers": 1, "num_attention_heads": 1,
                                        "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})


class FixtureTest(unittest.TestCase):
    def test_reference_dumps_reproduce(self):
        for name in ("tiny-gqa-bf16-tied", "tiny-gqa-f32-untied", "tiny-mha-f16-sharded",
                     "tiny-llama3-bf16-tied"):
            d = os.path.join(FIXTURES, name)
            dump, meta = H.load_safetensors(os.path.join(d, "reference.safetensors"))
            model = H.load_checkpoint(d, torch.float64)
            tokens = json.loads(meta["prompt_tokens"])
            with torch.no_grad():
                states = model.hidden_states(torch.tensor([tokens]))
            L = model.cfg.num_hidden_layers
            self.assertEqual(len(dump), 2 * L + 1)
            for i in range(L + 1):
                self.assertLess((states[i][0] - dump[f"hidden.{i}"].double()).abs().max().item(), 1e-5)
            sp = H.load_tokenizer(os.path.join(d, "tokenizer.model"))
            self.assertEqual(sp.get_piece_size(), model.cfg.vocab_size)
            self.assertEqual([model.cfg.bos_token_id] + sp.encode(meta["prompt"]), tokens)


class BundledModelTest(unittest.TestCase):
    def test_reference_and_prompt_files(self):
        d = os.path.join(ROOT, "models", "shakespeare-8l")
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            self.skipTest("no bundled model")
        dump, meta = H.load_safetensors(os.path.join(d, "reference.safetensors"))
        model = H.load_checkpoint(d, torch.float64)
        sp = H.load_tokenizer(os.path.join(d, "tokenizer.model"))
        with open(os.path.join(d, "data", "test.jsonl"), encoding="utf-8") as f:
            prompt = json.loads(f.readline())["prompt"]
        tokens = json.loads(meta["prompt_tokens"])
        self.assertEqual([1] + sp.encode(prompt), tokens)
        with torch.no_grad():
            states = model.hidden_states(torch.tensor([tokens]))
            logits = model.exit_head(states[-1])[0]
        self.assertLess((states[-1][0] - dump["hidden.8"].double()).abs().max().item(), 1e-5)
        self.assertLess((logits - dump["logits.8"].double()).abs().max().item(), 1e-5)
        self.assertEqual(int(logits[-1].argmax()), json.loads(meta["greedy_tokens"])[0])


class SplitTest(unittest.TestCase):
    def test_blocks_and_buckets(self):
        text = "A:\nx\n\nB:\ny\nz\n \n\nC:\nw\n"
        blocks, splits = train.make_splits(text)
        self.assertEqual(blocks, ["A:\nx", "B:\ny\nz", "C:\nw"])
        self.assertEqual(splits, [train.block_split(b) for b in blocks])
        self.assertEqual(train.layer_weights("weighted", 3), [1 / 6, 2 / 6, 3 / 6])
        blocks[0] = "A:\n1\n2\n3\n4"
        prompts = train.make_prompts(blocks, ["train", "test", "test"], "test")
        self.assertEqual(prompts[0]["prompt"], "1\n2\n3\n4\n\nB:\n")  # last 4 lines of the previous block
        self.assertEqual(prompts[0]["reference"], "y\nz")


if __name__ == "__main__":
    unittest.main()
