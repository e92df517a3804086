#!/usr/bin/env bash
# Build a Python 3.11 base image without any container registry.
#
# debootstrap a minimal Debian bookworm root filesystem (python3.11, pip, venv, CA
# certificates) from the Debian mirror apt already uses on this machine, `docker import` it
# and tag it. Use it as the base of the tbpipe images when no registry can be reached:
#
#   docker/bootstrap-base.sh                      # -> tbpipe-base:bookworm
#   tbpipe build-images --base-image tbpipe-base:bookworm
#
# Options (environment variables):
#   TAG=tbpipe-base:bookworm   image tag to create
#   MIRROR=http://...          Debian mirror (default: the first one in /etc/apt/sources.list*)
#   SECURITY_MIRROR=http://... security mirror for `apt-get upgrade` (default: from sources,
#                              "none" to skip the upgrade)
#   SUITE=bookworm             Debian suite (bookworm ships python3.11)
#   FORCE=1                    rebuild even when the tag already exists
# Needs root (debootstrap), debootstrap and a running docker engine. Takes 2-5 minutes.
set -euo pipefail

TAG="${TAG:-tbpipe-base:bookworm}"
SUITE="${SUITE:-bookworm}"
PACKAGES="python3,python3-pip,python3-venv,ca-certificates,tzdata,netbase"

say() { echo "bootstrap-base: $*"; }
die() { echo "bootstrap-base: error: $*" >&2; exit 1; }

# The mirror URIs apt uses here, in order (deb822 "URIs:" and one-line "deb" entries).
apt_mirrors() {
    shopt -s nullglob
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    for f in "${files[@]}"; do
        [[ -f "$f" ]] || continue
        sed -n -e 's/^[[:space:]]*URIs:[[:space:]]*//p' \
               -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' "$f"
    done | tr ' ' '\n' | sed '/^$/d'
}

pick_mirror() {  # $1: "main" or "security"
    local uri
    while read -r uri; do
        case "$1:$uri" in
            security:*debian-security*) echo "$uri"; return ;;
            main:*debian-security*) ;;
            main:*/debian|main:*/debian/) echo "$uri"; return ;;
        esac
    done < <(apt_mirrors)
}

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
command -v docker >/dev/null || die "docker is missing: install docker (e.g. apt-get install -y docker.io)"
docker info >/dev/null 2>&1 || die "the docker engine is not running: start dockerd (or .ci/docker-setup.sh)"

if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG already exists (FORCE=1 rebuilds it)"
    exit 0
fi

MIRROR="${MIRROR:-$(pick_mirror main)}"
[[ -n "$MIRROR" ]] || die "no Debian mirror found in /etc/apt/sources.list*: set MIRROR=http://..."
SECURITY_MIRROR="${SECURITY_MIRROR:-$(pick_mirror security)}"

ROOTFS="$(mktemp -d /tmp/tbpipe-rootfs.XXXXXX)"
cleanup() { rm -rf "$ROOTFS" "$ROOTFS.log"; }
trap cleanup EXIT

say "debootstrap $SUITE from $MIRROR into $ROOTFS (a few minutes)"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" 2>&1 \
        | tee "$ROOTFS.log" | sed -u -n -e '/^I: \(Retrieving Release\|Resolving dependencies of base\|Installing core\|Base system\)/s/^I: /bootstrap-base:   /p'; then
    tail -20 "$ROOTFS.log" >&2
    die "debootstrap failed"
fi
rm -f "$ROOTFS.log"

{
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [[ -n "$SECURITY_MIRROR" && "$SECURITY_MIRROR" != none ]] \
        && echo "deb $SECURITY_MIRROR $SUITE-security main"
} > "$ROOTFS/etc/apt/sources.list"

if [[ "$SECURITY_MIRROR" != none ]]; then
    say "applying $SUITE-updates and security updates"
    if ! chroot "$ROOTFS" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get -qq -y -o APT::Sandbox::User=root upgrade' > "$ROOTFS.log" 2>&1; then
        tail -20 "$ROOTFS.log" >&2
        die "apt-get upgrade failed (SECURITY_MIRROR=none skips it)"
    fi
    rm -f "$ROOTFS.log"
fi

say "trimming caches and docs"
chroot "$ROOTFS" /bin/sh -c 'apt-get clean'
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
       "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
# Same shape as the official python images: `python` works, pip is not pinned to the system.
ln -sf python3 "$ROOTFS/usr/bin/python"

say "docker import -> $TAG"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE ($PACKAGES) from $MIRROR" \
    - "$TAG" >/dev/null
docker run --rm "$TAG" python3 -c 'import sys, ssl, venv; print("bootstrap-base: python", sys.version.split()[0])'
say "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
