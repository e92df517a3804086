#!/usr/bin/env bash
# Make a docker engine available for the docker tests (marker `docker`): install docker.io
# (and debootstrap, which docker/bootstrap-base.sh needs) with apt-get when missing, start
# dockerd in the background when no engine answers, and wait until it does.
#   .ci/docker-setup.sh            # idempotent; log of a started dockerd: /tmp/tbpipe-dockerd.log
#   DOCKERD_ARGS="--storage-driver=vfs" .ci/docker-setup.sh   # where overlayfs is not allowed
set -euo pipefail

say() { echo "docker-setup: $*"; }
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

missing=()
command -v docker >/dev/null || missing+=(docker.io)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if (( ${#missing[@]} )); then
    say "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    say "docker engine running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi

LOG="${DOCKERD_LOG:-/tmp/tbpipe-dockerd.log}"
say "starting dockerd (log: $LOG)"
$SUDO sh -c "nohup dockerd ${DOCKERD_ARGS:-} > '$LOG' 2>&1 &"
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        say "docker engine running ($(docker info --format '{{.ServerVersion}}'))"
        exit 0
    fi
    sleep 1
done
tail -20 "$LOG" >&2
echo "docker-setup: error: dockerd did not answer within 60 s (log: $LOG)" >&2
exit 1
