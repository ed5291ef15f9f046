#!/usr/bin/env bash
# Set-up of the calm-serve client test: fetches the official OpenAI client library for Node
# (openai on npm, a pinned version with no dependencies) into DEST (cached there: fetched once,
# checked by SHA-256; npm checks the tarball's own integrity as it fetches it).
# Usage: tests/serve/fetch_openai.sh DEST
# Fails (exit 1, saying why) without node/npm or the registry; configure with -DCALM_NPM_TESTS=OFF
# to leave the test out.
set -euo pipefail
dest=${1:?usage: fetch_openai.sh DEST}
pkg=openai@5.23.2
tarball=openai-5.23.2.tgz
sha=a2aa74ff8be1a80a215af201a3d2228e999464d166c1eaec2c9ca313395fbef1

say() { echo "fetch_openai: $*" >&2; }
fail() {
  say "$*"
  say "the calm-serve client test needs node, npm and the npm registry;" \
      "configure with -DCALM_NPM_TESTS=OFF to leave it out"
  exit 1
}
for tool in node npm tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (tools/install-deps.sh installs node and npm)"
done
checked() { [[ -f "$1" ]] && echo "$sha  $1" | sha256sum --check --status; }
mkdir -p "$dest"
if checked "$dest/$tarball" && [[ -f "$dest/openai/package/index.mjs" ]]; then
  say "cached in $dest"
  exit 0
fi
tmp=$(mktemp -d "$dest/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "fetching $pkg from the npm registry into $dest"
if ! (cd "$tmp" && npm pack --loglevel error --cache "$dest/npm-cache" --fetch-retries 1 \
        --fetch-timeout 120000 "$pkg" >"$tmp/npm.log" 2>&1); then
  cat "$tmp/npm.log" >&2
  fail "npm could not fetch $pkg (is the npm registry reachable?)"
fi
checked "$tmp/$tarball" || fail "$pkg: not the expected package (SHA-256 differs)"
mkdir -p "$tmp/openai"
tar -xzf "$tmp/$tarball" -C "$tmp/openai"
rm -rf "$dest/openai"
mv "$tmp/openai" "$dest/openai"
mv "$tmp/$tarball" "$dest/$tarball"
