#!/usr/bin/env bash
# Installs the Debian 12 packages calm needs, only those missing. Usage: tools/install-deps.sh [--python | --fuzz]
#   --python  also the PyTorch training/reference stack (python3-torch, python3-sentencepiece)
#   --fuzz    also clang with libFuzzer (tools/test.sh --fuzz)
set -euo pipefail
pkgs=(g++ cmake make pkg-config xtl-dev libxsimd-dev xtensor-dev libsentencepiece-dev sentencepiece
      libpcre2-dev doctest-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libfmt-dev
      libcpp-httplib-dev)
# The tokenizer reference test runs a JavaScript implementation fetched with npm. A node that is
# already there (e.g. a newer one with its own npm) is kept.
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
if [[ "${1:-}" == "--fuzz" ]]; then  # libFuzzer and its sanitizer runtimes come with clang
  pkgs+=(clang libclang-rt-14-dev python3)
fi
if [[ "${1:-}" == "--python" ]]; then
  pkgs+=(python3 python3-numpy python3-torch python3-sentencepiece libopenblas0-pthread python3-matplotlib)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "calm: installing missing Debian packages: ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
