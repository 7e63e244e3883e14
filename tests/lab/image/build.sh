#!/usr/bin/env bash
# Build the lab's Debian 12 VM image (test infrastructure, not part of the collection).
#
#   build.sh OUTDIR PUBKEY
#
# Produces OUTDIR/{rootfs.img,rootfs-san.img,vmlinuz,initrd.img,packages.txt}. No mount, no loop
# device: mmdebstrap builds a directory, mkfs.ext4 -d turns it into a raw image, and
# QEMU boots the kernel and initrd taken from the tree.
#
# The packages the roles install are pre-fetched (downloaded into apt's cache with
# fresh package lists), one at a time so that each package's own dependency closure
# is complete whatever else is installed, with Recommends as the guest's apt will
# want them (mmdebstrap's own build-time config turns them off), not installed, so the roles' install path stays real but
# needs no download: they become the guests' only apt source, a local repository
# (/var/lib/lab-apt). update-initramfs is switched off in the guest: QEMU gives the
# kernel and initrd, so rebuilding one inside the guest would only cost minutes.
set -euo pipefail
out=$1
pubkey=$2
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
mirror=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${LAB_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
size=${LAB_IMAGE_SIZE:-6G}

installed=$(grep -v '^#' "$here/packages-installed.txt" | xargs | tr ' ' ',')
prefetch=$(grep -v '^#' "$here/packages-prefetched.txt" | xargs)

work=$(mktemp -d "${out}.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

mmdebstrap --variant=minbase --mode=root \
  --include="$installed" \
  --skip=cleanup/apt \
  --customize-hook="'$here/customize.sh' \"\$1\" '$pubkey'" \
  "$suite" "$root" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main"

# The guests' only package source: the pre-fetched packages as a local repository
# (test infrastructure; the guests are offline). With Debian's whole lists (51 MB)
# every opening of apt's cache in a guest cost 5 to 8 s under emulation (each task
# of the apt module opens it) and each `apt-get update` a minute (the bluemind
# role's, after adding its repository); with a few hundred packages both are quick.
repo=$root/var/lib/lab-apt
mkdir -p "$repo"
mv "$root"/var/cache/apt/archives/*.deb "$repo"/
(cd "$repo" && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null)
rm -f "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources
echo "deb [trusted=yes] file:/var/lib/lab-apt ./" > "$root"/etc/apt/sources.list
rm -rf "$root"/var/lib/apt/lists
mkdir -p "$root"/var/lib/apt/lists/partial
rm -f "$root"/var/cache/apt/*.bin
chroot "$root" apt-get update -qq
# Prove the pre-fetch with the guest's own apt configuration (mmdebstrap's build-time
# settings are gone now) and no other source: each package of the list resolves and
# installs (simulated) from the local repository alone.
for p in $prefetch; do
  if ! sim=$(chroot "$root" apt-get install -s -qq -o APT::Install-Recommends=true "$p" 2>&1); then
    echo "local repository incomplete: $p does not install from it:" >&2
    echo "$sim" >&2
    exit 1
  fi
done

cp -L "$root"/vmlinuz "$work"/vmlinuz
cp -L "$root"/initrd.img "$work"/initrd.img
find "$repo" -maxdepth 1 -name '*.deb' -printf '%f\n' | sort > "$work"/packages.txt
mv "$root"/root/.lab-installed "$work"/installed.txt
mkfs.ext4 -q -F -L labroot -E root_owner=0:0 -d "$root" "$work"/rootfs.img "$size"

# The storage array VM (san scenario) is test infrastructure, not a role's target:
# its image has the LIO target tools installed, from the same pre-fetched cache.
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -q -y install targetcli-fb >/dev/null
chroot "$root" systemctl enable rtslib-fb-targetctl.service >/dev/null 2>&1
mkfs.ext4 -q -F -L labroot -E root_owner=0:0 -d "$root" "$work"/rootfs-san.img "$size"

mkdir -p "$out"
mv "$work"/rootfs.img "$work"/rootfs-san.img "$work"/vmlinuz "$work"/initrd.img "$work"/packages.txt \
  "$work"/installed.txt "$out"/
