#!/bin/sh
# protoc over the official Envoy API protos shipped by @grpc/grpc-js-xds
# (tests/xds/node_modules, from `make xds-npm`).
#   protos.sh descriptor OUT.pb      FileDescriptorSet of the xDS surface
#   protos.sh encode TYPE < TEXT     binary message from text format
# The shipped protoc-gen-validate predates StringRules.ignore_empty, which
# the envoy-api protos use: a patched copy of validate.proto is put first on
# the include path (options are not needed, only the schema).
set -e
here=$(cd "$(dirname "$0")" && pwd)
D=$here/node_modules/@grpc/grpc-js-xds/deps
[ -d "$D" ] || { echo "protos.sh: run 'make xds-npm' first" >&2; exit 2; }
tmp=${TMPDIR:-/tmp}/remora-pgv.$$
mkdir -p "$tmp/validate"
trap 'rm -rf "$tmp"' EXIT
sed '/^message StringRules {/a\    optional bool ignore_empty = 260;' \
	"$D/protoc-gen-validate/validate/validate.proto" > "$tmp/validate/validate.proto"
INC="-I$tmp -I$D/envoy-api -I$D/xds -I$D/googleapis -I/usr/include"
FILES="envoy/service/discovery/v3/ads.proto envoy/config/listener/v3/listener.proto
envoy/config/cluster/v3/cluster.proto envoy/config/endpoint/v3/endpoint.proto
envoy/config/route/v3/route.proto
envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto
envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto
envoy/extensions/filters/network/local_ratelimit/v3/local_rate_limit.proto
envoy/extensions/filters/http/router/v3/router.proto envoy/extensions/filters/http/fault/v3/fault.proto
envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto
envoy/extensions/filters/listener/original_dst/v3/original_dst.proto
envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto
envoy/extensions/upstreams/http/v3/http_protocol_options.proto
envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.proto
envoy/extensions/transport_sockets/tls/v3/tls.proto
envoy/extensions/transport_sockets/tls/v3/secret.proto
envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto
envoy/extensions/filters/http/rbac/v3/rbac.proto
envoy/extensions/filters/network/rbac/v3/rbac.proto"
case "$1" in
descriptor) protoc $INC --include_imports -o "$2" $FILES ;;
encode) protoc $INC --encode="$2" $FILES ;;
*) echo "usage: protos.sh descriptor OUT | encode TYPE" >&2; exit 2 ;;
esac
