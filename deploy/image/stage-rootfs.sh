#!/bin/sh
# stage-rootfs.sh REMORA_BIN ROOT - lay out the Remora image's root
# filesystem in ROOT (a new or empty directory): used by build-image.sh
# (umoci, offline) and by deploy/Dockerfile, so both images hold the same files.
#   /usr/local/bin/remora        the proxy (entrypoint), also the injector and webhook
#   /usr/local/bin/remora-cp     the reference control plane (if built beside remora)
#   /usr/local/bin/remora-init   the iptables init step, with what it runs:
#                                /bin/sh (dash), tr, grep, sed and iptables
#                                (nft backend: xtables-nft-multi + modules)
# plus every shared library those need (from ldd), /etc/passwd and /etc/group
# with the proxy user 1337, and /tmp.
set -eu
BIN=${1:?usage: stage-rootfs.sh REMORA_BIN ROOT}
root=${2:?usage: stage-rootfs.sh REMORA_BIN ROOT}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
mkdir -p "$root/usr/local/bin" "$root/bin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" \
	"$root/tmp" "$root/proc" "$root/dev" "$root/run"
chmod 1777 "$root/tmp"

# copy FILE into the root at the same path, and every library it needs
copy_with_libs() {
	src=$1; dst=${2:-$1}
	mkdir -p "$root$(dirname "$dst")"
	cp -L "$src" "$root$dst"
	ldd "$src" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' |
	while read -r lib; do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

copy_with_libs "$BIN" /usr/local/bin/remora
cp "$REPO/deploy/init/remora-init" "$root/usr/local/bin/remora-init"
chmod 755 "$root/usr/local/bin/remora" "$root/usr/local/bin/remora-init"
# the reference control plane, when it was built beside the proxy
if [ -x "$(dirname "$BIN")/remora-cp" ]; then copy_with_libs "$(dirname "$BIN")/remora-cp" /usr/local/bin/remora-cp; fi
copy_with_libs "$(readlink -f /bin/sh)" /bin/sh
for t in tr grep sed; do
	copy_with_libs "$(command -v $t)" "/usr/bin/$t"
done
xt=$(readlink -f "$(command -v xtables-nft-multi || echo /usr/sbin/xtables-nft-multi)")
copy_with_libs "$xt" /usr/sbin/xtables-nft-multi
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
	ln -s xtables-nft-multi "$root/usr/sbin/$n"
done
# iptables loads its match/target modules at run time
mods=$(dirname "$(ldd "$xt" | awk '/libxtables/ { print $3 }')")/xtables
if [ -d "$mods" ]; then
	for m in "$mods"/*.so; do copy_with_libs "$m"; done
fi
cat > "$root/etc/passwd" <<PW
root:x:0:0:root:/root:/bin/sh
remora:x:1337:1337:remora proxy:/nonexistent:/bin/false
PW
cat > "$root/etc/group" <<GR
root:x:0:
remora:x:1337:
GR
echo "hosts: files dns" > "$root/etc/nsswitch.conf"

