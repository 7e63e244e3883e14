#!/usr/bin/env bash
# mmdebstrap customize hook of build.sh:  customize.sh ROOT PUBKEY
# Runs on the host against the image tree ROOT, after the packages are installed.
set -euo pipefail
root=$1
pubkey=$2
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t prefetch < <(grep -v '^#' "$here/packages-prefetched.txt" | grep .)

cp -a "$here/files/." "$root/"
# One package at a time, so each one's own closure is complete; with Recommends,
# as the guest's apt will want them (mmdebstrap's build-time config turns them off).
for p in "${prefetch[@]}"; do
  chroot "$root" apt-get -q -y -o APT::Install-Recommends=true --download-only install "$p" >/dev/null
done
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$pubkey" "$root/root/.ssh/authorized_keys"
chroot "$root" systemctl enable lab-init.service lab-nic-watchdog.service >/dev/null 2>&1
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer >/dev/null 2>&1
chroot "$root" dpkg-query -W -f="\${Package} \${Version}\n" > "$root/root/.lab-installed"
# Every VM gets its own machine id and SSH host key at first boot.
rm -f "$root"/etc/ssh/ssh_host_* "$root/var/lib/dbus/machine-id"
: > "$root/etc/machine-id"
