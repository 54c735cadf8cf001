#!/usr/bin/env bash
# The Mermaid renderer for tests/test_docs_charts.py (the README's and docs' charts drawn by the library GitHub draws
# them with): mermaid's browser bundle from the npm registry, pinned by version and sha256, into .cache/mermaid/.
# Idempotent. Without npm or the registry it fails, and the chart test is skipped, saying why.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=11.17.2
SHA256=6ad2f42c3fc26bbf9e45cbb6d11898972573ea52b33a5f4ff51952899f950ffd
dest=.cache/mermaid
if [ -f "$dest/mermaid.min.js" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
command -v npm >/dev/null || { echo "fetch_mermaid: npm not found" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mermaid@$VERSION" >/dev/null)
echo "$SHA256  $tmp/mermaid-$VERSION.tgz" | sha256sum -c --quiet -
tar -xzf "$tmp/mermaid-$VERSION.tgz" -C "$tmp" package/dist/mermaid.min.js
mkdir -p "$dest"
mv "$tmp/package/dist/mermaid.min.js" "$dest/mermaid.min.js"
echo "$VERSION" > "$dest/VERSION"
