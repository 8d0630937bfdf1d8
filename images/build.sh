#!/usr/bin/env bash
# Builds the local images tests and examples use. Nothing is pulled:
#   agora-workload:latest  FROM scratch + the statically linked workload binary
#   agora-busybox:latest   FROM scratch + busybox-static from Debian
#
#   bash images/build.sh               build (or rebuild) both
#   bash images/build.sh --if-missing  build only those the engine lacks
#                                      (what the container tests and `agora dev` run)
#
# Runs under a lock (${TMPDIR:-/tmp}/agora-images.lock, or $AGORA_IMAGES_LOCK):
# concurrent runs (parallel test processes, several checkouts, CI) build
# once; the others wait, then find the images there.
set -euo pipefail
cd "$(dirname "$0")/.."

if_missing=false
case "${1:-}" in
  --if-missing) if_missing=true ;;
  "") ;;
  *) echo "usage: $0 [--if-missing]" >&2; exit 2 ;;
esac

lock="${AGORA_IMAGES_LOCK:-${TMPDIR:-/tmp}/agora-images.lock}"
exec 9>>"$lock"
chmod a+rw "$lock" 2>/dev/null || true  # other users' runs share it
if ! flock -n 9; then
  echo "another build of the agora images is running; waiting for it ($lock)" >&2
  flock 9
fi

have() { docker image inspect "$1" >/dev/null 2>&1; }
build_workload=true
build_busybox=true
if $if_missing; then
  have agora-workload:latest && build_workload=false
  have agora-busybox:latest && build_busybox=false
fi

target="${CARGO_TARGET_DIR:-$PWD/target}/static"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

if $build_workload; then
  echo "building the workload binary (static)"
  RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p agora-workload --target x86_64-unknown-linux-gnu --target-dir "$target"
  mkdir -p "$ctx/workload"
  cp "$target/x86_64-unknown-linux-gnu/release/agora-workload" "$ctx/workload/"
  cat > "$ctx/workload/Dockerfile" <<'DOCKER'
FROM scratch
COPY agora-workload /agora-workload
EXPOSE 8080
ENTRYPOINT ["/agora-workload"]
DOCKER
  docker build -q -t agora-workload:latest "$ctx/workload"
fi

if $build_busybox; then
  busybox="$(command -v busybox || true)"
  if [ -z "$busybox" ] || ! file "$busybox" 2>/dev/null | grep -q static; then
    if [ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
      busybox=/bin/busybox
    else
      echo "installing busybox-static from Debian"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -q busybox-static >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q busybox-static >/dev/null; }
      busybox=/bin/busybox
    fi
  fi
  mkdir -p "$ctx/busybox"
  cp "$busybox" "$ctx/busybox/busybox"
  cat > "$ctx/busybox/Dockerfile" <<'DOCKER'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["/bin/sh"]
DOCKER
  docker build -q -t agora-busybox:latest "$ctx/busybox"
fi

docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^agora-(workload|busybox):latest'
