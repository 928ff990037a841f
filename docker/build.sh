#!/usr/bin/env bash
# Builds a mica serve image: docker/build.sh cpu|cuda [TAG]
#   BASE       base image (default: localhost/mica-base:bookworm, made by make-base.sh)
#   MODELS     models to bake in (default: tiny.en silero-v6 pyannote-segmentation
#              resemblyzer transnetv2; empty: none, the endpoint's model.tar.gz gives them)
#   BIN        the mica binary (default: the release build of this checkout)
#   ENGINE     podman (default) or docker
set -euo pipefail
kind="${1:?usage: docker/build.sh cpu|cuda [TAG]}"
tag="${2:-localhost/mica:$kind}"
root="$(cd "$(dirname "$0")/.." && pwd)"
engine="${ENGINE:-podman}"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$kind" in
  cpu)
    base="${BASE:-localhost/mica-base:bookworm}"
    if [ -z "${BIN:-}" ]; then
      (cd "$root" && cargo build --release --quiet -p mica-cli)
    fi
    bin="${BIN:-$target/release/mica}"
    ;;
  cuda)
    base="${BASE:-localhost/mica-base:bookworm}"
    bin="${BIN:-${MICA_CUDA_TARGET_DIR:-$HOME/.cache/mica/cuda-target}/release/mica}"
    [ -x "$bin" ] || { echo "build the CUDA binary first (README: GPU)" >&2; exit 1; }
    ;;
  *) echo "unknown image kind $kind (cpu or cuda)" >&2; exit 2 ;;
esac
if [ "$base" = "localhost/mica-base:bookworm" ]; then
  "$root/docker/make-base.sh" "$base"
fi
models="${MODELS-tiny.en silero-v6 pyannote-segmentation resemblyzer transnetv2}"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Line tables help a debugger, not an endpoint: a third of the size.
strip --strip-debug -o "$context/mica" "$bin"
mkdir -p "$context/models"
store="${MICA_MODELS:-$HOME/.cache/mica/models}"
for m in $models; do
  [ -d "$store/$m" ] || "$bin" models fetch "$m"
  cp -r "$store/$m" "$context/models/$m"
done
isolation=()
[ "$engine" = podman ] && isolation=(--isolation chroot)
"$engine" build "${isolation[@]}" -f "$root/docker/Dockerfile.$kind" \
  --build-arg "BASE=$base" -t "$tag" "$context"
echo "built $tag"
