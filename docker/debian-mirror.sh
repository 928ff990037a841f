# Sourced by make-base.sh and cuda12-build.sh: prints the Debian package source this
# machine's apt uses (deb822 or one-line format), or $MIRROR when set, so that no address
# is written into this repository. Prints nothing when none is found.
debian_mirror() {
  local mirror="${MIRROR:-}"
  if [ -z "$mirror" ]; then
    mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  if [ -z "$mirror" ]; then
    mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  fi
  printf '%s' "$mirror"
}
