#!/usr/bin/env bash
# Build the images the Docker tests use, from this machine's own files (no registry needed).
#
#   dstack-test/busybox:latest   static busybox only (sh and the usual applets)
#   dstack-test/python:3.11      Debian's python3.11 (+ venv, pip, ssl, sqlite3, CA bundle),
#                                bash, and static busybox for the rest of the shell tools
#
# Each image is skipped when it already exists; `--force` rebuilds both. Needs a running Docker
# engine, `dpkg` and `busybox-static`; the python3.11 packages are installed with apt if missing.
set -euo pipefail

FORCE=""
[ "${1:-}" = "--force" ] && FORCE=1

PY_IMAGE="dstack-test/python:3.11"
BB_IMAGE="dstack-test/busybox:latest"
PY_PACKAGES=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11
  python3.11-venv python3-pip python3-pip-whl python3-setuptools-whl python3-pkg-resources
  python3-setuptools python3-wheel ca-certificates)

log() { printf '[build-test-images] %s\n' "$*"; }
have_image() { [ -z "$FORCE" ] && docker image inspect "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

BUSYBOX=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then BUSYBOX=$candidate; break; fi
done

ensure_packages() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Copy one host path into ROOTFS, keeping it as a symlink when it is one, resolving the
# usr-merged `/lib` -> `/usr/lib` layout so the loader finds libraries at either path.
copy_path() {
  local src=$1 root=$2
  [ -e "$src" ] || [ -L "$src" ] || return 0
  local real
  real=$(readlink -f "$src")
  mkdir -p "$root$(dirname "$real")"
  if [ -d "$real" ] && [ ! -L "$src" ]; then
    mkdir -p "$root$real"
    return 0
  fi
  [ -e "$root$real" ] || cp -a "$real" "$root$real"
  if [ "$src" != "$real" ] && [ ! -e "$root$src" ] && [ ! -L "$root$src" ]; then
    mkdir -p "$root$(dirname "$src")"
    ln -s "$real" "$root$src"
  fi
}

copy_libs_of() {
  local root=$1; shift
  ldd "$@" 2>/dev/null | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
    copy_path "$lib" "$root"
  done
}

base_rootfs() {
  local root=$1
  mkdir -p "$root"/{bin,usr/bin,usr/lib,tmp,etc,root,workflow,dev,proc,sys}
  chmod 1777 "$root/tmp"
  ln -s usr/lib "$root/lib" 2>/dev/null || true
  ln -s usr/lib "$root/lib64" 2>/dev/null || true
  cp "$BUSYBOX" "$root/usr/bin/busybox"
  for applet in $("$BUSYBOX" --list); do
    [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

# `usr/bin` is reached through the usr-merged links, so `/bin/sh` resolves too.
import_rootfs() {
  local root=$1 image=$2
  rmdir "$root/bin" 2>/dev/null && ln -s usr/bin "$root/bin"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' -c 'ENV LANG=C.UTF-8' -c 'WORKDIR /' \
    -c 'CMD ["sh"]' - "$image" >/dev/null
  log "built $image"
}

build_busybox() {
  have_image "$BB_IMAGE" && { log "$BB_IMAGE exists"; return 0; }
  local root
  root=$(mktemp -d)
  base_rootfs "$root"
  import_rootfs "$root" "$BB_IMAGE"
  rm -rf "$root"
}

build_python() {
  have_image "$PY_IMAGE" && { log "$PY_IMAGE exists"; return 0; }
  ensure_packages "${PY_PACKAGES[@]}"
  local root
  root=$(mktemp -d)
  base_rootfs "$root"
  dpkg -L "${PY_PACKAGES[@]}" 2>/dev/null | sort -u | while read -r path; do
    if [ -f "$path" ] || [ -L "$path" ]; then copy_path "$path" "$root"; fi
  done
  # bash runs the job's commands; it replaces busybox's applet links of the same name.
  rm -f "$root/usr/bin/bash" "$root/usr/bin/sh"
  cp /bin/bash "$root/usr/bin/bash"
  ln -s bash "$root/usr/bin/sh"
  copy_libs_of "$root" /bin/bash /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so
  ln -sf python3.11 "$root/usr/bin/python3"
  ln -sf python3.11 "$root/usr/bin/python"
  [ -e "$root/usr/bin/pip3" ] && ln -sf pip3 "$root/usr/bin/pip"
  # Debian's pip refuses system-wide installs (PEP 668); jobs in a container may install.
  rm -f "$root/usr/lib/python3.11/EXTERNALLY-MANAGED"
  mkdir -p "$root/etc/ssl/certs"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  import_rootfs "$root" "$PY_IMAGE"
  rm -rf "$root"
}

command -v docker >/dev/null || { echo "docker CLI not found" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "no Docker engine answers; start dockerd first" >&2; exit 1; }
if [ -z "$BUSYBOX" ]; then
  ensure_packages busybox-static
  BUSYBOX=/bin/busybox
fi
build_busybox
build_python
