#!/usr/bin/env bash
# Builds a mica serve image: docker/build.sh cpu|cuda [TAG]
#   BASE       base image (default: localhost/mica-base:bookworm for cpu, :trixie for cuda,
#              made by make-base.sh)
#   MODELS     models to bake in (default: tiny.en silero-v6 pyannote-segmentation
#              resemblyzer transnetv2; empty: none, the endpoint's model.tar.gz gives them)
#   BIN        the mica binary (default: the release build of this checkout; for cuda, the
#              CUDA 12.4 build of docker/cuda12-build.sh, built if missing)
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
    # CUDA 12.4, built in a Debian trixie chroot (docker/cuda12-build.sh), so on trixie.
    base="${BASE:-localhost/mica-base:trixie}"
    cuda_bin="${MICA_CUDA12_TARGET_DIR:-$HOME/.cache/mica/cuda12-target}/release/mica"
    if [ -z "${BIN:-}" ] && [ ! -x "$cuda_bin" ]; then
      "$root/docker/cuda12-build.sh" >&2
    fi
    bin="${BIN:-$cuda_bin}"
    [ -x "$bin" ] || { echo "no CUDA binary at $bin (docker/cuda12-build.sh builds it)" >&2; exit 1; }
    # The CUDA binary needs trixie and CUDA libraries to run; a missing model is fetched
    # with this machine's CPU build instead.
    fetch_bin="$target/release/mica"
    need_fetch=""
    for m in ${MODELS-tiny.en silero-v6 pyannote-segmentation resemblyzer transnetv2}; do
      [ -d "${MICA_MODELS:-$HOME/.cache/mica/models}/$m" ] || need_fetch=1
    done
    if [ -n "$need_fetch" ] && [ ! -x "$fetch_bin" ]; then
      (cd "$root" && cargo build --release --quiet -p mica-cli)
    fi
    ;;
  *) echo "unknown image kind $kind (cpu or cuda)" >&2; exit 2 ;;
esac
if [ "$base" = "localhost/mica-base:bookworm" ]; then
  "$root/docker/make-base.sh" "$base"
elif [ "$base" = "localhost/mica-base:trixie" ]; then
  SUITE=trixie "$root/docker/make-base.sh" "$base"
fi
models="${MODELS-tiny.en silero-v6 pyannote-segmentation resemblyzer transnetv2}"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Line tables help a debugger, not an endpoint: a third of the size.
strip --strip-debug -o "$context/mica" "$bin"
mkdir -p "$context/models"
store="${MICA_MODELS:-$HOME/.cache/mica/models}"
for m in $models; do
  [ -d "$store/$m" ] || "${fetch_bin:-$bin}" models fetch "$m"
  cp -r "$store/$m" "$context/models/$m"
done
isolation=()
[ "$engine" = podman ] && isolation=(--isolation chroot)
"$engine" build "${isolation[@]}" -f "$root/docker/Dockerfile.$kind" \
  --build-arg "BASE=$base" -t "$tag" "$context"
echo "built $tag"
