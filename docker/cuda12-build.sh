#!/usr/bin/env bash
# Builds mica's CUDA 12 release binary (`--features cuda`) for the CUDA image
# (docker/Dockerfile.cuda) in a Debian trixie chroot, whose non-free archive has the CUDA
# 12.4 toolkit (nvcc 12.4). The binary links trixie's glibc and CUDA 12.4 libraries, and
# its kernels are PTX ISA 8.4, which driver 550 (CUDA 12.4) and later JIT-compile: on
# SageMaker that is InferenceAmiVersion al2-ami-sagemaker-inference-gpu-3-1.
#   docker/cuda12-build.sh [extra cargo build arguments]
#   MICA_TRIXIE_ROOT        the chroot (default ~/.cache/mica/trixie-cuda, about 5 GB), made
#                           once with debootstrap from this machine's Debian package source
#   MICA_CUDA12_TARGET_DIR  cargo's target directory (default ~/.cache/mica/cuda12-target);
#                           the binary is its release/mica
#   CUDA_COMPUTE_CAP        GPU generation of the kernels (default 80: the PTX of sm_80 is
#                           JIT-compiled for A100, A10G sm_86, L4 sm_89 and H100 sm_90; T4,
#                           g4dn, needs 75)
#   MIRROR                  Debian package source (default: the one this machine's apt uses)
# Needs root (debootstrap, mount, chroot). The repository, ~/.cargo, ~/.rustup and the
# target directory are bind-mounted into the chroot at the same paths, so the host's Rust
# toolchain builds there; every mount is undone on exit. The GPU driver (libcuda.so.1) is
# not needed: a stub exporting the functions cudarc declares satisfies the linker.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "cuda12-build: run as root (debootstrap, mount, chroot)" >&2; exit 1; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
chr="${MICA_TRIXIE_ROOT:-$HOME/.cache/mica/trixie-cuda}"
target="${MICA_CUDA12_TARGET_DIR:-$HOME/.cache/mica/cuda12-target}"
cap="${CUDA_COMPUTE_CAP:-80}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
packages=(nvidia-cuda-toolkit gcc g++ pkg-config ca-certificates)
# Builds run at the lowest priority: this machine is shared.
nice=(nice -n "${MICA_NICE:-19}")

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" 2>/dev/null || true
  done
  mounted=()
}
trap cleanup EXIT
# bind SRC: mounts SRC at the same path inside the chroot.
bind() {
  mkdir -p "$chr$1"
  mount --bind "$1" "$chr$1"
  mounted+=("$chr$1")
}
# Refuses to touch a directory something is still mounted under (a crashed earlier run).
no_mounts_under() {
  if awk '{print $2}' /proc/mounts | grep -q "^$1\(/\|$\)"; then
    echo "cuda12-build: something is still mounted under $1; unmount it first" >&2
    exit 1
  fi
}
in_chroot() {
  chroot "$chr" /usr/bin/env -i HOME="$HOME" LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# 1. The trixie root, with contrib and non-free (the CUDA toolkit is in non-free).
if [ ! -e "$chr/.mica-debootstrap" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
  # shellcheck source=docker/debian-mirror.sh
  . "$repo/docker/debian-mirror.sh"
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || { echo "cuda12-build: no Debian package source found; set MIRROR" >&2; exit 1; }
  no_mounts_under "$chr.tmp"
  rm -rf "$chr.tmp"
  mkdir -p "$(dirname "$chr")"
  echo "cuda12-build: debootstrap trixie into $chr" >&2
  start=$(date +%s)
  "${nice[@]}" debootstrap --variant=minbase --components=main,contrib,non-free trixie \
    "$chr.tmp" "$mirror" >"$chr.debootstrap.log" 2>&1 || {
    tail -n 20 "$chr.debootstrap.log" >&2
    exit 1
  }
  no_mounts_under "$chr"
  rm -rf "$chr"
  mv "$chr.tmp" "$chr"
  touch "$chr/.mica-debootstrap"
  echo "cuda12-build: debootstrap took $(($(date +%s) - start)) s" >&2
fi
grep -qE '^deb .* non-free' "$chr/etc/apt/sources.list" 2>/dev/null ||
  sed -i -E 's/^(deb .* main)$/\1 contrib non-free/' "$chr/etc/apt/sources.list"
cp -L /etc/resolv.conf "$chr/etc/resolv.conf" 2>/dev/null || true

mount -t proc proc "$chr/proc"
mounted+=("$chr/proc")
mount --bind /dev "$chr/dev"
mounted+=("$chr/dev")

# 2. The CUDA 12 toolkit and the C toolchain (nvcc's host compiler, rustc's linker).
if [ "$(cat "$chr/.mica-packages" 2>/dev/null)" != "${packages[*]}" ]; then
  echo "cuda12-build: installing ${packages[*]} in the chroot" >&2
  start=$(date +%s)
  in_chroot apt-get update -qq
  in_chroot "${nice[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  in_chroot apt-get clean
  echo "${packages[*]}" >"$chr/.mica-packages"
  echo "cuda12-build: the toolkit install took $(($(date +%s) - start)) s" >&2
fi

# 3. A stub driver library: every function cudarc declares, soname libcuda.so.1, so the
# real driver is what loads at run time (the NVIDIA container runtime mounts it). Trixie's
# nvidia-cuda-dev pulls the driver's libcuda1, which the linker finds first; the stub is
# the fallback should it not, and a driver that answers CUDA_ERROR_NO_DEVICE (100) to
# everything, for trying the binary on a machine without a GPU.
stub=/usr/local/lib/mica-cuda-stub
if [ ! -e "$chr$stub/libcuda.so" ] || ! grep -q 'return 100' "$chr$stub/cuda_stub.c"; then
  cudarc=$(ls -d "$cargo_home"/registry/src/*/cudarc-0.19.* 2>/dev/null | tail -n1 || true)
  if [ -z "$cudarc" ]; then
    (cd "$repo" && cargo fetch -q)
    cudarc=$(ls -d "$cargo_home"/registry/src/*/cudarc-0.19.* | tail -n1)
  fi
  mkdir -p "$chr$stub"
  grep -ohE "pub unsafe fn cu[A-Za-z0-9_]+" "$cudarc/src/driver/sys/mod.rs" |
    awk '{print "int " $4 "(void){return 100;}"}' | sort -u >"$chr$stub/cuda_stub.c"
  in_chroot gcc -shared -fPIC -o "$stub/libcuda.so" -Wl,-soname,libcuda.so.1 "$stub/cuda_stub.c"
fi

# 4. The build, inside the chroot.
mkdir -p "$target"
bind "$repo"
bind "$cargo_home"
bind "$rustup_home"
bind "$target"
echo "cuda12-build: $(in_chroot nvcc --version | tail -n2 | head -n1), CUDA_COMPUTE_CAP=$cap" >&2
start=$(date +%s)
in_chroot CARGO_HOME="$cargo_home" RUSTUP_HOME="$rustup_home" CARGO_TARGET_DIR="$target" \
  PATH="$cargo_home/bin:/usr/local/bin:/usr/bin:/bin" CUDA_COMPUTE_CAP="$cap" \
  LIBRARY_PATH="$stub" ${CARGO_BUILD_JOBS:+CARGO_BUILD_JOBS="$CARGO_BUILD_JOBS"} \
  "${nice[@]}" /bin/sh -c 'cd "$0" && exec cargo build --release -p mica-cli --features cuda "$@"' "$repo" "$@"
echo "cuda12-build: cargo build took $(($(date +%s) - start)) s" >&2
echo "$target/release/mica"
