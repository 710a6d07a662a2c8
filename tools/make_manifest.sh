#!/usr/bin/env bash
# Write patches/manifest/<version>.sha256: the sha256 of every file that the
# version's series modifies, as released on PyPI (extracted from the wheel by
# tools/overlay.sh). tools/apply.sh checks installed files against it with
# `sha256sum -c` before patching and after reverting.
#
# usage: tools/make_manifest.sh [VERSION...]   (default: every version in
#        patches/targets.tsv)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
targets=$repo/patches/targets.tsv
mapfile -t versions < <(if [ $# -gt 0 ]; then printf '%s\n' "$@"; else
  grep -v '^#' "$targets" | cut -f1; fi)
mkdir -p "$repo/patches/manifest"
for version in "${versions[@]}"; do
  folder=$(awk -F'\t' -v v="$version" '$1 == v { print $2 }' "$targets")
  [ -n "$folder" ] || { echo "make_manifest.sh: $version not in $targets" >&2; exit 2; }
  tmp=$(mktemp -d)
  bash "$repo/tools/overlay.sh" "$version" "$tmp/o" >/dev/null
  # Files the series modifies (not the ones it creates).
  mapfile -t files < <(cat "$repo/patches/$folder"/*.patch \
    | awk '/^diff --git /{f=substr($3, 3)} /^new file mode/{f=""} /^index /{if (f) print f}' \
    | sort -u)
  (cd "$tmp/o" && sha256sum "${files[@]}") >"$repo/patches/manifest/$version.sha256"
  rm -rf "$tmp"
  echo "patches/manifest/$version.sha256: ${#files[@]} file(s)"
done
