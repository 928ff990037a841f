#!/usr/bin/env bash
# Makes the Debian base image the Dockerfiles build on where no image registry is
# reachable: debootstrap from this machine's own Debian package source, then
# `podman import`. Idempotent: an existing image is kept.
#   docker/make-base.sh [IMAGE]      (default localhost/mica-base:bookworm)
set -euo pipefail
image="${1:-localhost/mica-base:bookworm}"
suite="${SUITE:-bookworm}"
if podman image exists "$image"; then
  echo "base image $image exists"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install $tool)" >&2; exit 1; }
done
# The package source this machine's apt uses: the image installs from the same place, and
# no address is written into this repository.
# shellcheck source=docker/debian-mirror.sh
. "$(dirname "$0")/debian-mirror.sh"
mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "no Debian package source found; set MIRROR" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debootstrap $suite into $work/rootfs"
debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
# Smaller: no package lists or caches in the base.
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
tar -C "$work/rootfs" -c . | podman import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image" >/dev/null
echo "base image $image made"
