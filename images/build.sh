#!/usr/bin/env bash
# Builds the local images tests and examples use. Nothing is pulled:
#   agora-workload:latest  FROM scratch + the statically linked workload binary
#   agora-busybox:latest   FROM scratch + busybox-static from Debian
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}/static"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

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
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^agora-(workload|busybox):latest'
