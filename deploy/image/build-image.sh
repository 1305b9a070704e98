#!/bin/sh
# build-image.sh REMORA_BIN OUT.tar [TAG] - the Remora container image, built
# offline as an OCI image layout tarball with umoci (no Docker engine, no
# registry): one layer with the root filesystem of stage-rootfs.sh (remora,
# remora-init and what they need), entrypoint remora, user 1337.
# deploy/Dockerfile builds the same content with a Docker engine.  Load the result with e.g.
#   skopeo copy oci-archive:build/remora-image.tar docker-daemon:remora:0.1.0
set -eu
BIN=${1:?usage: build-image.sh REMORA_BIN OUT.tar [TAG]}
OUT=${2:?usage: build-image.sh REMORA_BIN OUT.tar [TAG]}
TAG=${3:-0.1.0}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v umoci >/dev/null || { echo "build-image: umoci not installed (make deps)" >&2; exit 1; }

work=$(mktemp -d /tmp/remora-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/stage
sh "$HERE/stage-rootfs.sh" "$BIN" "$root"

layout=$work/layout
umoci init --layout "$layout"
umoci new --image "$layout:$TAG"
umoci unpack --image "$layout:$TAG" "$work/bundle" >/dev/null
cp -a "$root/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$TAG" "$work/bundle"
umoci config --image "$layout:$TAG" --os linux --architecture amd64 \
	--config.entrypoint /usr/local/bin/remora --config.workingdir / \
	--config.user 1337:1337 \
	--config.env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bin \
	--config.exposedports 15000/tcp --config.exposedports 15001/tcp \
	--config.exposedports 15006/tcp --config.exposedports 15021/tcp \
	--config.exposedports 15090/tcp \
	--config.label org.opencontainers.image.title=remora \
	--config.label "org.opencontainers.image.version=$TAG"
umoci gc --layout "$layout"
mkdir -p "$(dirname "$OUT")"
tar -C "$layout" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "image: $OUT ($TAG, $(du -k "$OUT" | cut -f1) KiB)"
