#!/usr/bin/env bash
# Installs the system programs mica needs at run time and for fetching assets:
# ffmpeg/ffprobe (video and exotic audio), dpkg-deb/apt-get (Debian packages), npm
# (npm packages), python3 + pip (wheels). Idempotent; uses sudo when not root.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)

if ! command -v apt-get >/dev/null 2>&1; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}; install them with your package manager" >&2
    exit 1
  fi
  exit 0
fi

# apt-get download (test media) needs current package lists, as do installs.
lists_stale=1
if [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n1)" ]; then
  lists_stale=0
fi
if [ ${#missing[@]} -gt 0 ] || [ $lists_stale -eq 1 ]; then
  $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "system packages ok: $(ffmpeg -version | head -n1)"
