#!/bin/sh
# Install the Debian packages Remora needs to build, test and benchmark.
# Only what is missing is installed; `apt-get update` runs only then.
set -e
PKGS="gcc make pkg-config libevent-dev libssl-dev libnghttp2-dev libyaml-dev libjansson-dev
libc-ares-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libpcre2-dev libxxhash-dev
curl wrk haproxy nginx-light prometheus python3-pytest python3-yaml python3-h2 python3-grpcio nghttp2-client
clang-14 libclang-rt-14-dev iproute2 procps dnsmasq-base iptables util-linux
testssl.sh protobuf-compiler nodejs
umoci"
PKGS="$PKGS valgrind"   # make test-valgrind
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm: Debian's package, unless a nodejs build that bundles it is installed
# (its own npm conflicts with Debian's).  Used by `make xds-npm` (tests/xds).
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "installing:$missing"
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: need root to apt-get install:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The Debian nginx/haproxy packages may start services; the tests and
# benchmarks run their own instances on other ports, so stop them.
for s in nginx haproxy prometheus; do
	(service "$s" stop || true) >/dev/null 2>&1
done
exit 0
