#!/usr/bin/env bash
# Fails if a tracked source or documentation file cites a document that is not in the repository
# (the pattern below: the old spec/stack notes or tracker numbers). Cite docs/design.md instead.
# Usage: tests/check_citations.sh [REPO_ROOT]   (default: the current directory)
# Exit status: 0 clean, 1 citations found (listed as file:line:text), 77 not a git checkout (skip).
set -euo pipefail

root="${1:-.}"
cd "$root"
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "check_citations: $root is not a git checkout; skipped" >&2
  exit 77
fi

pattern='\bSPEC\b|STACK\.md|\bissue [0-9]'

# Tracked files only; skip this script, fixtures and bundled model data. grep -I skips binaries.
mapfile -t files < <(
  git ls-files -- include src examples tests bench tools docs models README.md CMakeLists.txt |
    grep -vE '^tests/check_citations\.sh$|^tests/fixtures/|^models/[^/]+/data/'
)

if ((${#files[@]} == 0)); then
  echo "check_citations: no tracked files found under $root" >&2
  exit 1
fi

status=0
hits=$(printf '%s\0' "${files[@]}" | xargs -0 grep -nIE -- "$pattern" || status=$?)
if ((status > 1)); then
  echo "check_citations: grep failed (status $status)" >&2
  exit 1
fi
if [[ -n "$hits" ]]; then
  echo "check_citations: citations of documents outside the repository (cite docs/design.md):" >&2
  printf '%s\n' "$hits" >&2
  exit 1
fi
echo "check_citations: OK (${#files[@]} files)"
