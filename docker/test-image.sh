#!/usr/bin/env bash
# Builds the CPU image for real and starts its entrypoint in a chroot of the image (a
# container cannot run here: no cgroups), then checks SageMaker's contract through it:
# the label, /ping, an invocation with a real recording, and SIGTERM ending it in time.
#   docker/test-image.sh [TAG]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-localhost/mica:cpu-test}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
missing=()
for tool in podman debootstrap curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
"$root/docker/build.sh" cpu "$tag" >/dev/null

fail() { echo "image test failed: $*" >&2; exit 1; }
label=$(podman image inspect --format '{{index .Labels "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"}}' "$tag")
[ "$label" = "true" ] || fail "the bind-to-port label is '$label'"
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$tag")
[ "$entrypoint" = '["/usr/local/bin/mica"]' ] || fail "entrypoint $entrypoint is not exec form"

work=$(mktemp -d)
rootfs="$work/rootfs"
mkdir -p "$rootfs"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  umount "$rootfs/proc" 2>/dev/null || true
  umount "$rootfs/dev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
container=$(podman create "$tag")
podman export "$container" | tar -x -C "$rootfs"
podman rm "$container" >/dev/null
mount -t proc proc "$rootfs/proc"
mount --bind /dev "$rootfs/dev"

# The image's own entrypoint, argument and environment, SageMaker's port variable added.
mapfile -t env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$tag" | sed '/^$/d')
cmd=$(podman image inspect --format '{{range .Config.Cmd}}{{.}} {{end}}' "$tag")
port=$((20000 + RANDOM % 20000))
chroot "$rootfs" /usr/bin/env -i "${env[@]}" SAGEMAKER_BIND_TO_PORT="$port" \
  /usr/local/bin/mica $cmd >"$work/serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ping" || true)" = 200 ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "the server exited"; }
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ping")" = 200 ] || fail "/ping never answered 200"

mica="${CARGO_TARGET_DIR:-$root/target}/release/mica"
"$mica" models fetch jfk >/dev/null 2>&1
jfk="${MICA_SAMPLES:-$HOME/.cache/mica/samples}/jfk/jfk.wav"
answer=$(curl -s -H 'Content-Type: audio/wav' -H 'Accept: text/vtt' --data-binary @"$jfk" "$url/invocations")
case "$answer" in
  WEBVTT*"what your country can do for you"*) ;;
  *) cat "$work/serve.log" >&2; fail "the invocation answered: $answer" ;;
esac
status=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/octet-stream' --data-binary 'not media' "$url/invocations")
[ "$status" = 400 ] || fail "garbage answered $status"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ping")" = 200 ] || fail "/ping after garbage"

start=$(date +%s)
kill -TERM "$pid"
wait "$pid" || fail "mica exited with $? after SIGTERM"
pid=""
elapsed=$(( $(date +%s) - start ))
[ "$elapsed" -le 25 ] || fail "SIGTERM took $elapsed s"
echo "image $tag: label, exec entrypoint, /ping, an invocation, a bad one and SIGTERM (${elapsed} s) checked in a chroot"
