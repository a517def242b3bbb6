#!/usr/bin/env bash
# A stand-in for the image's base, python:3.12-slim, made from Debian packages: for a machine
# that reaches Debian's mirror and PyPI but no container registry (`make image-test` uses it).
#
#   scripts/image_base.sh [IMAGE]      # default localhost/aoai-simulator-base:trixie
#
# Debian 13 (trixie) with its python3 (3.13) and a virtual environment in /opt/python whose bin
# folder comes first on PATH, so `python` and `pip` are what the Dockerfile expects of the
# official image. Needs root, debootstrap and podman; the mirror is the one apt already uses
# (DEBIAN_MIRROR to choose another). Nothing is made when the image exists already.
set -euo pipefail

image="${1:-localhost/aoai-simulator-base:trixie}"
if podman image exists "$image"; then
  echo "$image: present"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "image_base.sh: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done

# The mirror apt uses for Debian itself (deb822 sources first, then sources.list), not the
# security one.
mirror="${DEBIAN_MIRROR:-$(
  grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v security | head -n 1 | tr -d ' ' || true
)}"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/aoai-simulator-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
started=$SECONDS
echo "Making a Debian trixie root file system from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
  trixie "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
chroot "$rootfs" python3 -m venv /opt/python
# The certificate authorities this machine adds to Debian's (a company proxy's, say) are
# trusted in the base too, so pip and apt in the build reach what the host reaches.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
# As in Debian's official images, apt keeps no downloaded packages or package caches after an
# install: a Dockerfile's `apt-get install` adds only what it installs.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python"]' \
  - "$image" >/dev/null
echo "$image: made in $((SECONDS - started)) s ($(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}'))"
