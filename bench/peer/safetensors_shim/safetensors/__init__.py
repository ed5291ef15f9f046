"""Minimal stand-in for the `safetensors` package's safe_open (not in Debian 12), enough for
llama.cpp's convert_hf_to_gguf.py --no-lazy: keys() and get_tensor(name), read with calm's own
reader (tools/hf_llama.py)."""
import contextlib
import os
import sys

sys.path.insert(0, os.environ["CALM_TOOLS"])
import hf_llama  # noqa: E402


@contextlib.contextmanager
def safe_open(path, framework="pt", device="cpu"):
    tensors, _ = hf_llama.load_safetensors(str(path))

    class _File:
        def keys(self):
            return list(tensors.keys())

        def get_tensor(self, name):
            return tensors[name]

    yield _File()
