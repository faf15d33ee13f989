#!/usr/bin/env bash
# Builds the OpenZFS test VM image from Debian packages only, and caches it.
#
#   bash test/hosts/openzfs-vm/build.sh      (as root; prints the image directory last, on stdout)
#
# The image is a Debian bookworm kernel (linux-image-amd64, 6.1) and a busybox initramfs
# holding the OpenZFS 2.x modules (zfs-dkms from bookworm-backports, compiled by dkms in a
# debootstrap chroot), the ZFS userland with its libraries, OpenSSH's sshd and sftp-server,
# sudo (with PAM) and udevd.
# `vm.ts` boots it with qemu (TCG) and reaches it over ssh. Why a VM: the host runs zfs-fuse
# (zfsutils-linux conflicts with it) and its running kernel cannot load modules.
#
# Cache (outside the repo), keyed by what goes in, so a second run reuses it:
#   $ZCSI_VM_CACHE (default /var/cache/zcsi-openzfs-vm)/
#     apt/                      a private apt state: lists of bookworm{,-updates,-backports,-security}
#     debs/                     downloaded .debs, shared by every build
#     chroot-<pkgkey>/          the debootstrap chroot with the modules built (kept: a change to
#                               the initramfs assembly below then costs seconds, not minutes)
#     image-<pkgkey>-<initkey>/ vmlinuz, initramfs.cpio.zst, manifest.json   <- what vm.ts boots
#   pkgkey  = hash of the candidate versions of the packages below (from the apt lists)
#   initkey = hash of this script
# Stale chroots and images (other keys) are removed after a successful build. With no network,
# the newest existing image is used (and said so on stderr).
#
# Env: ZCSI_VM_CACHE, ZCSI_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#      ZCSI_DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
set -euo pipefail

CACHE=${ZCSI_VM_CACHE:-/var/cache/zcsi-openzfs-vm}
MIRROR=${ZCSI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${ZCSI_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# What the guest needs; their candidate versions make the cache key.
KERNEL_PACKAGES=(linux-image-amd64 linux-headers-amd64)
ZFS_PACKAGES=(zfs-dkms zfsutils-linux)
# sudo and sftp-server make the VM a full pool host: the node's SSHFS mount runs
# `sudo -n [-u owner] /usr/lib/openssh/sftp-server` there (src/mount/sshfs.ts).
GUEST_PACKAGES=(busybox-static openssh-server openssh-sftp-server sudo udev kmod coreutils)
SELF=$(readlink -f "$0")

log() { echo "build: $*" >&2; }
die() { echo "build: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot)"
for tool in debootstrap apt-get apt-cache sha256sum cpio zstd flock; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install debootstrap cpio zstd util-linux)"
done
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/apt/empty.d" "$CACHE/debs"

# One build at a time (two test runs starting together wait here instead of building twice).
exec 9>"$CACHE/lock"
flock -w 1800 9 || die "another build holds $CACHE/lock for more than 30 minutes"

# ---- resolve versions with a private apt state (the host's own apt config is not touched) ----
cat >"$CACHE/apt/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $SUITE main contrib
deb [signed-by=$KEYRING] $MIRROR $SUITE-updates main contrib
deb [signed-by=$KEYRING] $MIRROR $SUITE-backports main contrib
deb [signed-by=$KEYRING] $SECURITY_MIRROR $SUITE-security main contrib
EOF
# OpenZFS 2.x from backports, everything else (the 6.1 kernel included) from bookworm.
PREFERENCES="Package: zfs-dkms zfsutils-linux libzfs* libzpool* libnvpair* libuutil* zfs-zed
Pin: release n=$SUITE-backports
Pin-Priority: 990
"
printf '%s' "$PREFERENCES" >"$CACHE/apt/preferences"
: >"$CACHE/apt/status"
APT=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o "Dir::Etc::SourceParts=$CACHE/apt/empty.d"
  -o "Dir::Etc::Preferences=$CACHE/apt/preferences" -o "Dir::Etc::PreferencesParts=$CACHE/apt/empty.d"
  -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::State::status=$CACHE/apt/status"
  -o "Dir::Cache=$CACHE/apt/cache" -o "APT::Architecture=amd64" -o "Debug::NoLocking=1")

newest_image() { ls -1dt "$CACHE"/image-*/ 2>/dev/null | while read -r d; do [ -f "$d/manifest.json" ] && { echo "${d%/}"; break; }; done; }

if ! apt-get "${APT[@]}" -qq update >"$CACHE/apt/update.log" 2>&1; then
  img=$(newest_image)
  [ -n "$img" ] || { cat "$CACHE/apt/update.log" >&2; die "cannot read the Debian package lists and no image is cached"; }
  log "cannot read the Debian package lists (offline?); using the newest cached image $img"
  echo "$img"
  exit 0
fi
# One apt-cache call for all (each call loads the whole cache: ~0.6 s).
versions=$(apt-cache "${APT[@]}" policy "${KERNEL_PACKAGES[@]}" "${ZFS_PACKAGES[@]}" "${GUEST_PACKAGES[@]}" |
  awk '/^[^ ].*:$/ {p = substr($0, 1, length($0) - 1)} /^  Candidate:/ {print p "=" $2}')
for p in "${KERNEL_PACKAGES[@]}" "${ZFS_PACKAGES[@]}" "${GUEST_PACKAGES[@]}"; do
  grep -qx "$p=[^(].*" <<<"$versions" || die "no candidate version for $p in $SUITE{,-updates,-backports,-security}"
done
versions+=$'\n'
PKGKEY=$(printf '%s%s' "$versions" "$PREFERENCES" | sha256sum | cut -c1-16)
INITKEY=$(sha256sum "$SELF" | cut -c1-12)
IMAGE="$CACHE/image-$PKGKEY-$INITKEY"
CHROOT="$CACHE/chroot-$PKGKEY"

if [ -f "$IMAGE/manifest.json" ]; then
  log "cached: $IMAGE"
  echo "$IMAGE"
  exit 0
fi
log "building $IMAGE for:"$'\n'"$versions"
T0=$(date +%s)

# ---- the chroot: debootstrap, kernel + headers, then zfs-dkms (dkms compiles here) ----------
MOUNTED=()
unmount_all() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" 2>/dev/null || true
  done
  MOUNTED=()
}
# Removes a directory tree, first unmounting anything mounted below it (a run killed with -9
# leaves the chroot's /dev bind mount behind, and rm -rf through it would empty the host's /dev).
safe_rm() {
  local d m
  for d in "$@"; do
    [ -e "$d" ] || continue
    d=$(readlink -f "$d")
    awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m"
    done
    rm -rf --one-file-system "$d"
  done
}
cleanup() {
  unmount_all
  safe_rm "$CACHE"/image-*.tmp "$CACHE"/chroot-*.tmp
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bind() { mkdir -p "$2"; mount "$@" && MOUNTED+=("${!#}"); }

if [ ! -f "$CHROOT/.complete" ]; then
  safe_rm "$CHROOT"
  WORK="$CHROOT.tmp"
  safe_rm "$WORK"
  log "debootstrap $SUITE into $WORK"
  debootstrap --variant=minbase --components=main,contrib --cache-dir="$CACHE/debs" \
    --keyring="$KEYRING" "$SUITE" "$WORK" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -30 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  cp "$CACHE/apt/sources.list" "$WORK/etc/apt/sources.list"
  printf '%s' "$PREFERENCES" >"$WORK/etc/apt/preferences.d/zcsi-zfs"
  # No services start in the chroot, and no Debian initramfs is built (we assemble our own).
  printf '#!/bin/sh\nexit 101\n' >"$WORK/usr/sbin/policy-rc.d"
  chmod +x "$WORK/usr/sbin/policy-rc.d"
  chroot "$WORK" dpkg-divert --local --rename --add /usr/sbin/update-initramfs >/dev/null
  ln -sf /bin/true "$WORK/usr/sbin/update-initramfs"
  bind -t proc proc "$WORK/proc"
  bind -t sysfs sys "$WORK/sys"
  bind --bind /dev "$WORK/dev"
  bind --bind "$CACHE/debs" "$WORK/var/cache/apt/archives"
  in_chroot() { chroot "$WORK" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
  APT_INSTALL=(apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold)
  log "apt-get update + kernel, headers, guest packages"
  { in_chroot apt-get -q update &&
    in_chroot "${APT_INSTALL[@]}" "${KERNEL_PACKAGES[@]}" "${GUEST_PACKAGES[@]}"; } >"$CACHE/apt-install.log" 2>&1 ||
    { tail -30 "$CACHE/apt-install.log" >&2; die "installing the kernel failed (log: $CACHE/apt-install.log)"; }
  KVER=$(ls -1 "$WORK/lib/modules" | sort -V | tail -1)
  chroot "$WORK" test -f "/lib/modules/$KVER/build/Makefile" || die "no kernel headers for $KVER in the chroot"
  log "zfs-dkms for $KVER (dkms compiles: minutes)"
  T1=$(date +%s)
  in_chroot "${APT_INSTALL[@]}" "${ZFS_PACKAGES[@]}" >>"$CACHE/apt-install.log" 2>&1 ||
    { tail -30 "$CACHE/apt-install.log" >&2; die "installing zfs-dkms failed (log: $CACHE/apt-install.log)"; }
  # dkms's postinst builds for the kernels it finds; make sure ours is one of them.
  if ! ls "$WORK/lib/modules/$KVER"/updates/dkms/zfs.ko* >/dev/null 2>&1; then
    in_chroot dkms autoinstall -k "$KVER" >>"$CACHE/apt-install.log" 2>&1 || true
  fi
  ls "$WORK/lib/modules/$KVER"/updates/dkms/zfs.ko* >/dev/null 2>&1 ||
    { tail -40 "$CACHE/apt-install.log" >&2; die "dkms built no zfs module for $KVER"; }
  log "dkms done in $(($(date +%s) - T1)) s"
  in_chroot dpkg-query -W -f='${Package}=${Version}\n' >"$WORK/.installed"
  unmount_all
  touch "$WORK/.complete"
  mv "$WORK" "$CHROOT"
fi

# ---- the initramfs ----------------------------------------------------------------------------
KVER=$(ls -1 "$CHROOT/lib/modules" | sort -V | tail -1)
WORK="$IMAGE.tmp"
ROOT="$WORK/root"
safe_rm "$WORK"
mkdir -p "$ROOT"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,proc,sys,dev,run,tmp,root,mnt,etc/ssh,etc/zfs,etc/zcsi,var/empty}
ln -s usr/bin "$ROOT/bin"; ln -s usr/sbin "$ROOT/sbin"; ln -s usr/lib "$ROOT/lib"; ln -s usr/lib64 "$ROOT/lib64"
chmod 1777 "$ROOT/tmp"; chmod 700 "$ROOT/root"

# Copies a chroot file to the same path in the image (through the merged-/usr links).
put() { local src; src="$CHROOT$(chroot "$CHROOT" readlink -f "$1")"; install -D -m "$(stat -c %a "$src")" "$src" "$ROOT/$1"; }
in_chroot_ro() { chroot "$CHROOT" env LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
which_in_chroot() { in_chroot_ro sh -c "command -v $1" || die "no $1 in the chroot"; }

# busybox (static) provides the shell and the small tools; GNU install, because the driver runs
# `install -d -o -g -m` on pool hosts and Debian pool hosts have coreutils.
put /usr/bin/busybox
for applet in $(chroot "$CHROOT" /usr/bin/busybox --list); do
  [ -e "$ROOT/usr/bin/$applet" ] || ln -s busybox "$ROOT/usr/bin/$applet"
done
BINARIES=(/usr/bin/install /usr/sbin/sshd /usr/bin/ssh-keygen /usr/bin/udevadm /usr/lib/systemd/systemd-udevd
  /usr/lib/openssh/sftp-server /usr/bin/sudo)
for b in zfs zpool zdb; do BINARIES+=("$(which_in_chroot $b)"); done
for b in "${BINARIES[@]}"; do
  rm -f "$ROOT$b"
  put "$b"
done
# What sudo dlopens (ldd does not list it): its policy plugin and the PAM modules.
DLOPENED=(/usr/libexec/sudo/sudoers.so)
for m in "$CHROOT"/usr/lib/x86_64-linux-gnu/security/pam_*.so; do DLOPENED+=("${m#"$CHROOT"}"); done
for m in "${DLOPENED[@]}"; do put "$m"; done
# Shared libraries of those binaries, and libgcc_s: glibc dlopens it for pthread_cancel, and
# without it `zfs send` aborts ("libgcc_s.so.1 must be installed") while `zfs recv` succeeds.
{
  for b in "${BINARIES[@]}" "${DLOPENED[@]}"; do in_chroot_ro ldd "$b" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'; done
  echo /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
} | sort -u | while read -r lib; do put "$lib"; done
# sudo's and PAM's configuration as Debian ships it (root may run anything). All of /etc/pam.d:
# `other` includes every common-* file, and one missing file aborts PAM for every service.
for f in /etc/sudoers /etc/security/limits.conf /etc/login.defs "$CHROOT"/etc/pam.d/*; do
  f=${f#"$CHROOT"}
  [ -f "$CHROOT$f" ] && put "$f"
done
mkdir -p "$ROOT/etc/sudoers.d" "$ROOT/etc/security/limits.d"

# udev: without udevd, `zpool create` on a whole disk waits 30 s and fails ("failed to detect
# device partitions"): libzfs waits for udev to announce the new partition.
mkdir -p "$ROOT/usr/lib/udev/rules.d" "$ROOT/etc/udev"
for r in 50-udev-default.rules 60-block.rules 60-persistent-storage.rules 60-zvol.rules 69-vdev.rules; do
  [ -f "$CHROOT/usr/lib/udev/rules.d/$r" ] && put "/usr/lib/udev/rules.d/$r"
done
for h in zvol_id vdev_id; do [ -f "$CHROOT/usr/lib/udev/$h" ] && put "/usr/lib/udev/$h"; done

# Kernel modules, in load order (dependencies first), debug info stripped.
MODULES=(virtio_pci virtio_blk virtio_net virtio_balloon virtio_rng zfs)
in_chroot_ro modprobe -S "$KVER" --show-depends -a "${MODULES[@]}" | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' >"$WORK/modules"
: >"$ROOT/etc/zcsi/modules"
while read -r ko; do
  dest="/usr/lib/modules/$KVER/$(basename "${ko%.xz}")"
  dest="${dest%.zst}"
  # Decompressed (busybox insmod takes plain .ko) and without debug info (dkms keeps it: the
  # zfs module shrinks several-fold), using the chroot's own tools.
  case "$ko" in
    *.xz) in_chroot_ro sh -c 'xz -dc "$1" >/tmp/module.ko' sh "$ko" ;;
    *.zst) in_chroot_ro sh -c 'zstd -qdc "$1" >/tmp/module.ko' sh "$ko" ;;
    *) cp "$CHROOT$ko" "$CHROOT/tmp/module.ko" ;;
  esac
  in_chroot_ro strip --strip-debug /tmp/module.ko
  install -D -m 644 "$CHROOT/tmp/module.ko" "$ROOT$dest"
  rm -f "$CHROOT/tmp/module.ko"
  echo "$dest" >>"$ROOT/etc/zcsi/modules"
done <"$WORK/modules"
grep -q '/zfs.ko$' "$ROOT/etc/zcsi/modules" || die "zfs.ko is not in the module list"

# Accounts: root logs in with busybox sh (a plain shell: nothing sourced per command).
cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
printf 'root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' >"$ROOT/etc/shadow"
chmod 640 "$ROOT/etc/shadow"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' >"$ROOT/etc/nsswitch.conf"
# The hostname resolves, or sudo warns "unable to resolve host" on every call.
printf '127.0.0.1 localhost\n127.0.1.1 openzfs-vm\n' >"$ROOT/etc/hosts"
ln -s /proc/self/mounts "$ROOT/etc/mtab"

# Two sshds on one host key: port 22 for the harness (exec, checks), port 2222 for the driver
# under test, so a test can kill and restart the driver's sshd through the other one.
cat >"$ROOT/etc/ssh/sshd_config" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
AuthorizedKeysFile /etc/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxSessions 20
MaxStartups 50:30:100
Subsystem sftp internal-sftp
LogLevel INFO
EOF

# The driver-facing sshd, started and killed by the harness (through the port-22 sshd).
cat >"$ROOT/usr/sbin/zcsi-service-sshd" <<'EOF'
#!/bin/sh
# zcsi-service-sshd start|kill: the sshd on port 2222. `kill` ends it and every session it
# runs (SIGKILL, like a crash): sshd puts each connection in its own session, so walk /proc.
pidfile=/run/sshd-service.pid
case "$1" in
  start)
    exec /usr/sbin/sshd -f /etc/ssh/sshd_config -o Port=2222 -o PidFile=$pidfile ;;
  kill)
    [ -f $pidfile ] || exit 0
    root=$(cat $pidfile)
    rm -f $pidfile
    pids=$root
    frontier=$root
    while [ -n "$frontier" ]; do
      next=""
      for stat in /proc/[0-9]*/stat; do
        read -r pid _ _ ppid _ <"$stat" 2>/dev/null || continue
        for p in $frontier; do [ "$ppid" = "$p" ] && next="$next $pid"; done
      done
      pids="$pids $next"
      frontier=$next
    done
    kill -9 $pids 2>/dev/null
    exit 0 ;;
  *) echo "usage: $0 start|kill" >&2; exit 2 ;;
esac
EOF
chmod 755 "$ROOT/usr/sbin/zcsi-service-sshd"

cat >"$ROOT/etc/inittab" <<'EOF'
::sysinit:/etc/zcsi/rc
::ctrlaltdel:/bin/poweroff -f
EOF
cat >"$ROOT/etc/zcsi/rc" <<'EOF'
#!/bin/sh
# Boot: mounts, modules, network, udev, keys, sshd; then "zcsi-vm: ready <host key>" on the console.
# Kernel command line: zcsi.authkey=<type>:<base64> (root's key), zcsi.arcmax=<bytes>.
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run/sshd /run/udev
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=755 run /run
mkdir -p /run/sshd /run/udev
chmod 755 /run/sshd
mount -t tmpfs tmp /tmp
say() { echo "zcsi-vm: $*" >/dev/console; }
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}" ;; esac; done; }
arcmax=$(arg zcsi.arcmax)
while read -r ko; do
  case "$ko" in
    */zfs.ko) insmod "$ko" ${arcmax:+zfs_arc_max=$arcmax} || say "insmod $ko failed" ;;
    *) insmod "$ko" || say "insmod $ko failed" ;;
  esac
done </etc/zcsi/modules
hostname openzfs-vm
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
/usr/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=20
key=$(arg zcsi.authkey)
[ -n "$key" ] && echo "${key%%:*} ${key#*:} zcsi-harness" >/etc/ssh/authorized_keys
ssh-keygen -q -t ed25519 -N "" -C openzfs-vm -f /etc/ssh/ssh_host_ed25519_key
/usr/sbin/sshd -f /etc/ssh/sshd_config -o Port=22 -o PidFile=/run/sshd.pid || say "sshd failed"
/usr/sbin/zcsi-service-sshd start || say "service sshd failed"
say "ready $(cat /etc/ssh/ssh_host_ed25519_key.pub)"
EOF
chmod 755 "$ROOT/etc/zcsi/rc"
ln -s bin/busybox "$ROOT/init"
# busybox runs as `init` because the kernel execs /init and busybox reads its applet from argv[0]...
# which is "/init": basename "init" → the init applet.

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | zstd -q -6 -T0 >"$WORK/initramfs.cpio.zst"
cp "$CHROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
BUILD_S=$(($(date +%s) - T0))
{
  echo "{"
  echo "  \"kernel\": \"$KVER\","
  echo "  \"pkgkey\": \"$PKGKEY\", \"initkey\": \"$INITKEY\","
  echo "  \"buildSeconds\": $BUILD_S,"
  echo "  \"initramfsBytes\": $(stat -c %s "$WORK/initramfs.cpio.zst"),"
  echo "  \"packages\": {"
  grep -E '^(zfs-dkms|zfsutils-linux|libzfs[0-9a-z]*|linux-image-[0-9].*|linux-headers-amd64|openssh-server|openssh-sftp-server|sudo|udev|busybox-static|coreutils|libc6)=' "$CHROOT/.installed" |
    sed 's/^\(.*\)=\(.*\)$/    "\1": "\2"/' | paste -sd, | sed 's/,/,\n/g'
  echo "  }"
  echo "}"
} >"$WORK/manifest.json"
rm -rf "$ROOT" "$WORK/modules"
mv "$WORK" "$IMAGE"
# Other keys are stale now.
for old in "$CACHE"/image-* "$CACHE"/chroot-*; do
  [ "$old" = "$IMAGE" ] || [ "$old" = "$CHROOT" ] || safe_rm "$old"
done
log "built $IMAGE in $BUILD_S s ($(du -sh "$IMAGE/initramfs.cpio.zst" | cut -f1) initramfs)"
echo "$IMAGE"
