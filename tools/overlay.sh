#!/usr/bin/env bash
# Build an optax "overlay": the optax package of one PyPI release, extracted
# from its wheel into DEST, pristine or with a patch series applied. Putting
# DEST first on PYTHONPATH runs that optax without touching any environment.
#
# usage: tools/overlay.sh VERSION DEST [SERIES_DIR]
#   VERSION     an optax release on PyPI, e.g. 0.2.8
#   DEST        directory to create (must not exist or be empty)
#   SERIES_DIR  optional patches/<target>/ folder; its *.patch files are
#               applied in name order with `patch -p1`, after a dry run of all
#
# Wheels are cached in $OPTAX_WHEEL_CACHE (default: .cache/wheels in the repo).
set -euo pipefail

die() { echo "overlay.sh: $*" >&2; exit 2; }

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: tools/overlay.sh VERSION DEST [SERIES_DIR]"
version=$1 dest=$2 series=${3:-}
[[ $version =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "not a release version: '$version'"
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
  die "destination exists and is not empty: $dest"
fi
if [ -n "$series" ]; then
  [ -d "$series" ] || die "no such patch series: $series"
  compgen -G "$series/*.patch" >/dev/null || die "no *.patch in $series"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${OPTAX_WHEEL_CACHE:-$repo/.cache/wheels}
py=${PYTHON:-python3}
mkdir -p "$cache"
wheel=$(compgen -G "$cache/optax-$version-*.whl" | head -n 1 || true)
if [ -z "$wheel" ]; then
  "$py" -m pip download --quiet --no-deps --only-binary=:all: \
    -d "$cache" "optax==$version" >/dev/null 2>&1 \
    || die "cannot download the optax $version wheel from PyPI"
  wheel=$(compgen -G "$cache/optax-$version-*.whl" | head -n 1 || true)
  [ -n "$wheel" ] || die "no optax $version wheel in $cache after download"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/overlay.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" -m zipfile -e "$wheel" "$tmp/tree"
if [ -n "$series" ]; then
  # Dry-run the whole series on a scratch copy first, so a series that does
  # not apply leaves nothing behind.
  cp -r "$tmp/tree" "$tmp/dry"
  for p in "$series"/*.patch; do
    patch -p1 -s --forward --no-backup-if-mismatch -d "$tmp/dry" <"$p" >/dev/null \
      || die "$(basename "$p") does not apply to optax $version"
  done
  for p in "$series"/*.patch; do
    patch -p1 -s --forward --no-backup-if-mismatch -d "$tmp/tree" <"$p" >/dev/null
  done
fi
mkdir -p "$dest"
cp -r "$tmp/tree/." "$dest/"
echo "$dest"
