#!/usr/bin/env bash
# Builds the Porchlight appliance image: Debian 12 (bookworm) minbase with systemd, the
# release binary, a dedicated user, the hardened service, a first-boot setup code, time sync
# (systemd-timesyncd) and mDNS (avahi-daemon: the box answers as porchlight.local).
# docs/appliance.md explains the result; image/test.sh boots it.
#
#   image/build.sh                          amd64 (a VM or an x86-64 mini PC)
#   image/build.sh --arch arm64             arm64 boards (image/host-binfmt sets up qemu-user)
#   image/build.sh --test-units             the image image/test.sh boots (not for boxes)
#
# Options:
#   --arch amd64|arm64      Debian architecture (default amd64)
#   --binary PATH           porchlight binary to install (default: cargo build --release,
#                           cross-compiled for arm64 through .cargo/config.toml)
#   --update-key PEM        Ed25519 public key (PEM) that update artifacts must be signed with
#                           (docs/update.md); without it the image cannot take updates
#   --size SIZE             root filesystem size (default 3G; the file is sparse)
#   --quota SIZE            store.quota in the image's config (default "1 GiB"; must fit --size)
#   --mirror URL            Debian mirror (default http://deb.debian.org/debian; use a
#                           snapshot.debian.org URL to pin the package versions)
#   --out DIR               output directory (default target/image/ARCH)
#   --test-units            also install the image test's units and scripts (image/test.sh
#                           needs them; they act only with `porchlight.imagetest` on the kernel
#                           command line). Never for an image that goes on a box.
#
# Output in DIR: rootfs.img (ext4, label porchlight-root, no partition table), vmlinuz,
# initrd.img, build-info.txt, SHA256SUMS. Boot the amd64 one with
#   qemu-system-x86_64 -m 1G -kernel vmlinuz -initrd initrd.img \
#     -append "root=/dev/vda console=ttyS0" -drive file=rootfs.img,format=raw,if=virtio ...
#
# Runs as root (debootstrap, chroot, file ownership) on Debian 12. The debootstrapped base is
# cached as a tarball keyed by suite, arch, mirror and package list (PORCHLIGHT_IMAGE_CACHE,
# default target/image/cache), so a rebuild downloads nothing and takes well under a minute.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

arch=amd64
binary=
update_key=
size=3G
quota="1 GiB"
mirror=http://deb.debian.org/debian
suite=bookworm
out=
test_units=false
while (($#)); do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --update-key) update_key=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --quota) quota=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --test-units) test_units=true; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "image/build.sh needs root (debootstrap, chroot)"
case "$arch" in
  amd64) rust_target=x86_64-unknown-linux-gnu; kernel=linux-image-amd64 ;;
  arm64) rust_target=aarch64-unknown-linux-gnu; kernel=linux-image-arm64 ;;
  *) die "--arch must be amd64 or arm64" ;;
esac
if [[ $arch != "$(dpkg --print-architecture)" ]]; then
  # debootstrap's second stage and the checks below run the image's own programs in a chroot:
  # binfmt_misc must hand arm64 ELF files to a static qemu (image/host-binfmt; idempotent).
  [[ $arch == arm64 ]] || die "cross-building $arch images is not set up (only arm64)"
  image/host-binfmt
fi
for tool in debootstrap mkfs.ext4 systemctl systemd-sysusers; do
  command -v "$tool" >/dev/null || die "$tool missing: apt-get install debootstrap e2fsprogs systemd"
done

target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-$repo/target}
out=${out:-$target_dir/image/$arch}
cache=${PORCHLIGHT_IMAGE_CACHE:-$target_dir/image/cache}
mkdir -p "$out" "$cache/debs"

# A fixed time for every file and the filesystem: the last commit's, or now outside git.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}

# --- the binary -----------------------------------------------------------------------------
if [[ -z $binary ]]; then
  step "cargo build --release --locked --bin porchlight ($rust_target)"
  if [[ $rust_target == x86_64-unknown-linux-gnu ]]; then
    cargo build --release --locked --bin porchlight
    binary=$target_dir/release/porchlight
  else
    cargo build --release --locked --target "$rust_target" --bin porchlight
    binary=$target_dir/$rust_target/release/porchlight
  fi
fi
[[ -x $binary ]] || die "no executable at $binary"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
bin_sha=$(sha256sum "$binary" | cut -c1-64)
# One directory per build, so an update of the same version is still a different directory.
version_dir="$version-${bin_sha:0:12}"

# --- the base system (cached) ---------------------------------------------------------------
# systemd-sysv: init. udev + kmod: devices and modules. dbus: avahi's bus. systemd-timesyncd:
# SNTP. avahi-daemon + libnss-mdns: porchlight.local. openssl: signature checks of updates
# (porchlight-update). curl + ca-certificates: downloading updates. e2fsprogs: fsck at boot.
PACKAGES=(systemd-sysv udev kmod dbus systemd-timesyncd avahi-daemon libnss-mdns iproute2
  openssl curl ca-certificates e2fsprogs zstd "$kernel")
key=$(printf '%s\n' "$suite" "$arch" "$mirror" "${PACKAGES[@]}" | sha256sum | cut -c1-16)
base="$cache/base-$suite-$arch-$key.tar"
work=$(mktemp -d "$target_dir/image/work.XXXXXX")
root="$work/root"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir "$root"

if [[ -s $base ]]; then
  step "Base system from cache ($base)"
  tar -C "$root" --numeric-owner -xpf "$base"
else
  step "debootstrap $suite $arch minbase (+${#PACKAGES[@]} packages) from $mirror"
  debootstrap --variant=minbase --arch="$arch" --cache-dir="$cache/debs" \
    --include="$(
      IFS=,
      echo "${PACKAGES[*]}"
    )" "$suite" "$root" "$mirror"
  # What apt downloaded is in the cache; the image does not need it.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --numeric-owner -cpf "$base.tmp" .
  mv "$base.tmp" "$base"
fi

# --- Porchlight -----------------------------------------------------------------------------
step "Installing porchlight $version_dir"
install -d -m 0755 "$root/usr/lib/porchlight/versions/$version_dir"
install -m 0755 "$binary" "$root/usr/lib/porchlight/versions/$version_dir/porchlight"
# /usr/bin/porchlight -> current/porchlight -> versions/X/porchlight: an update flips `current`
# in one rename (docs/update.md).
ln -sfn "versions/$version_dir" "$root/usr/lib/porchlight/current"
ln -sfn /usr/lib/porchlight/current/porchlight "$root/usr/bin/porchlight"
install -m 0755 image/units/setup-code "$root/usr/lib/porchlight/setup-code"
install -m 0755 image/update/porchlight-update "$root/usr/sbin/porchlight-update"

# The service user, from a sysusers.d entry (systemd-sysusers also runs at boot and would
# recreate it on a box whose /etc was reset).
install -D -m 0644 /dev/stdin "$root/usr/lib/sysusers.d/porchlight.conf" <<'EOF'
u porchlight - "Porchlight camera gateway" /var/lib/porchlight /usr/sbin/nologin
EOF
systemd-sysusers --root="$root"
gid=$(awk -F: '$1 == "porchlight" { print $3 }' "$root/etc/group")
[[ -n $gid ]] || die "systemd-sysusers did not create the porchlight group"

# /etc/porchlight: root-owned, readable by the service's group. The config is the documented
# example without cameras and without a city link (pairing and the resident add those).
install -d -m 0750 -o 0 -g "$gid" "$root/etc/porchlight"
{
  # Everything before the first camera, city link or pairing table, without the comment
  # block that introduces it (comments are held until a non-comment line shows they belong to
  # a kept setting). Keyed on the tables, not on the wording of a comment.
  awk '/^\[\[cameras\]\]|^\[uplink\]|^\[pairing\]/ { exit }
    /^#/ { held = held $0 "\n"; next }
    { printf "%s", held; held = ""; print }' config/porchlight.example.toml |
    sed "s/^quota = .*/quota = \"$quota\"/"
  cat <<'EOF'
# Cameras ([[cameras]]), the city link ([uplink]) and pairing ([pairing]): every key is in
# /usr/share/doc/porchlight/porchlight.example.toml. Restart after editing:
#   systemctl restart porchlight
EOF
} >"$work/porchlight.toml"
grep -q '^\[\[cameras\]\]\|^\[uplink\]' "$work/porchlight.toml" && die "config still has cameras or uplink"
install -m 0640 -o 0 -g "$gid" "$work/porchlight.toml" "$root/etc/porchlight/porchlight.toml"
if [[ -n $update_key ]]; then
  grep -q 'BEGIN PUBLIC KEY' "$update_key" || die "--update-key must be a PEM public key"
  install -m 0644 "$update_key" "$root/etc/porchlight/update-key.pem"
else
  echo "warning: no --update-key: this image refuses every update until /etc/porchlight/update-key.pem exists" >&2
fi
install -D -m 0644 config/porchlight.example.toml "$root/usr/share/doc/porchlight/porchlight.example.toml"
install -D -m 0644 docs/appliance.md "$root/usr/share/doc/porchlight/appliance.md"
install -D -m 0644 docs/update.md "$root/usr/share/doc/porchlight/update.md"

# Units.
for unit in image/porchlight.service image/units/porchlight-setup-code.service; do
  install -m 0644 "$unit" "$root/etc/systemd/system/"
done
install -D -m 0644 image/units/80-dhcp.network "$root/etc/systemd/network/80-dhcp.network"
systemctl --root="$root" enable porchlight.service porchlight-setup-code.service \
  systemd-networkd.service systemd-networkd-wait-online.service systemd-timesyncd.service \
  avahi-daemon.service

# The image test's hooks print the API token on the console, relay the loopback-only control
# API to a network address and install an update key from a test disk. Each unit has
# ConditionKernelCommandLine=porchlight.imagetest, but whoever can edit a box's kernel command
# line (a boot loader prompt, the SD card's cmdline.txt) could set that, so an image for a box
# does not carry them at all: only --test-units installs them (docs/appliance.md).
test_unit_files=(porchlight-imagetest.service porchlight-imagetest-proxy.socket
  porchlight-imagetest-proxy.service porchlight-imagetest-update.socket
  porchlight-imagetest-update@.service)
if $test_units; then
  step "Image test units (--test-units: not for boxes)"
  install -d -m 0755 "$root/usr/lib/porchlight/imagetest"
  install -m 0755 image/units/imagetest-marker "$root/usr/lib/porchlight/imagetest/marker"
  install -m 0755 image/units/imagetest-update "$root/usr/lib/porchlight/imagetest/update"
  for unit in "${test_unit_files[@]}"; do
    install -m 0644 "image/units/$unit" "$root/etc/systemd/system/"
    grep -qx 'ConditionKernelCommandLine=porchlight.imagetest' "image/units/$unit" ||
      die "image/units/$unit lacks ConditionKernelCommandLine=porchlight.imagetest"
  done
  systemctl --root="$root" enable porchlight-imagetest.service porchlight-imagetest-proxy.socket \
    porchlight-imagetest-update.socket
fi

# The resident web UI over DNS-SD (_http._tcp), at the port the image's config listens on.
# Advertised only when that config serves the UI on the LAN (not disabled, not loopback).
web_enabled=$(awk '/^\[/ { s = $0 } s == "[web]" && /^enabled *=/ { print $3 }' "$work/porchlight.toml")
web_listen=$(awk '/^\[/ { s = $0 } s == "[web]" && /^listen *=/ { gsub(/"/, "", $3); print $3 }' "$work/porchlight.toml")
web_port=${web_listen##*:}
web_host=${web_listen%:*}
if [[ $web_enabled != false && $web_port =~ ^[0-9]+$ && $web_host != 127.* && $web_host != "[::1]" ]]; then
  install -d -m 0755 "$root/etc/avahi/services"
  sed "s/@PORT@/$web_port/" image/avahi/porchlight-http.service >"$root/etc/avahi/services/porchlight-http.service"
  chmod 0644 "$root/etc/avahi/services/porchlight-http.service"
  web_note="web UI http://porchlight.local:$web_port/ advertised as _http._tcp"
else
  web_note="web UI not advertised ([web] enabled=${web_enabled:-?} listen=${web_listen:-?})"
fi
echo "$web_note"

# --- the system around it -------------------------------------------------------------------
step "System configuration"
echo porchlight >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	porchlight
::1		localhost ip6-localhost ip6-loopback
EOF
cat >"$root/etc/fstab" <<'EOF'
# noatime: reads of video segments must not turn into writes on the SD card.
LABEL=porchlight-root	/	ext4	defaults,noatime,errors=remount-ro	0	1
EOF
# The journal in RAM only (flash wear; docs/appliance.md): 32 MiB, lost at reboot.
install -D -m 0644 /dev/stdin "$root/etc/systemd/journald.conf.d/porchlight.conf" <<'EOF'
[Journal]
Storage=volatile
RuntimeMaxUse=32M
EOF
# Each box makes its own machine id on first boot (systemd's first-boot semantics).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# No password logins: root is locked; the console shows the setup code, not a shell.
chroot "$root" passwd -l root >/dev/null
# Stale host keys or caches from the build host must not ship.
rm -rf "$root"/tmp/* "$root"/var/tmp/* "$root"/var/log/*.log "$root"/var/cache/ldconfig/aux-cache

# --- checks in the image's own userland ---------------------------------------------------
# The binary against the image's libc and kernel interfaces (emulated for arm64 through
# binfmt_misc), and the units against the image's systemd: a unit that names a missing program
# or a setting this systemd does not know fails here, not on the box.
step "Checks inside the image (chroot, $arch)"
check_start=$(date +%s)
chroot "$root" /usr/bin/porchlight --version
chroot "$root" /usr/bin/porchlight selftest --dir /tmp
rm -rf "$root"/tmp/porchlight-selftest-*
verify_units=(porchlight.service porchlight-setup-code.service)
if $test_units; then
  verify_units+=("${test_unit_files[@]}")
fi
# SYSTEMD_LOG_LEVEL: verify prints every notice otherwise; warnings and errors still show.
SYSTEMD_LOG_LEVEL=warning chroot "$root" systemd-analyze verify "${verify_units[@]}" ||
  die "systemd-analyze verify found problems in the image's units (above)"
echo "selftest OK, systemd-analyze verify OK (${verify_units[*]}) in $(($(date +%s) - check_start)) s"
if ! $test_units; then
  leftovers=$(find "$root/etc/systemd" "$root/usr/lib/systemd" "$root/usr/lib/porchlight" -name '*imagetest*' | head -n 3)
  [[ -z $leftovers ]] || die "image test files in an image built without --test-units: $leftovers"
fi

if [[ -n $update_key ]]; then
  key_note="update key sha256 $(sha256sum <"$update_key" | cut -c1-16)"
else
  key_note="no update key (refuses every update)"
fi
# shellcheck disable=SC2016 # ${Package}: dpkg-query's format, not the shell's
cat >"$out/build-info.txt" <<EOF
porchlight $version ($version_dir), binary sha256 $bin_sha
debian $suite $arch from $mirror, base $(basename "$base")
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
$key_note
test units: $($test_units && echo "installed (porchlight.imagetest on the kernel command line enables them)" || echo none)
$web_note
packages: $(chroot "$root" dpkg-query -W -f='${Package}=${Version} ' | sha256sum | cut -c1-16) (sha256 of the dpkg list)
EOF
# shellcheck disable=SC2016 # dpkg-query's format
chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' >"$out/packages.txt"

# --- kernel, initrd, filesystem -------------------------------------------------------------
step "Kernel, initrd and ext4 root filesystem ($size)"
kver=$(find "$root/boot" -name 'vmlinuz-*' -printf '%f\n' | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
[[ -n $kver ]] || die "no kernel in $root/boot"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
# Same inputs, same timestamps, same UUID and hash seed: the filesystem's metadata does not
# vary between builds (the packages' contents do when the mirror moves on: pin --mirror).
find "$root" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
uuid=$(printf 'porchlight-root %s %s' "$arch" "$SOURCE_DATE_EPOCH" | sha256sum |
  sed 's/^\(.\{8\}\)\(.\{4\}\)\(.\{4\}\)\(.\{4\}\)\(.\{12\}\).*/\1-\2-\3-\4-\5/')
# What reproducibility is checked against: every path with its type, mode, owner, mtime and,
# for files, sha256 (ext4 itself stamps inode change times, so the image bytes differ).
(cd "$root" && find . -xdev -printf '%y %m %U:%G %T@ %p %l\n' | LC_ALL=C sort -k5 >"$work/tree")
(cd "$root" && find . -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >>"$work/tree"
cp "$work/tree" "$out/tree.txt"
sha256sum <"$work/tree" | cut -c1-64 >"$out/tree.sha256"
rm -f "$out/rootfs.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L porchlight-root -U "$uuid" \
  -E "hash_seed=$uuid,root_owner=0:0" -d "$root" "$out/rootfs.img" "$size"
(cd "$out" && sha256sum vmlinuz initrd.img rootfs.img >SHA256SUMS)
echo "tree sha256 $(cat "$out/tree.sha256") (paths, modes, owners, mtimes, contents)" >>"$out/build-info.txt"

step "Image ready in $out"
du -h --apparent-size "$out/rootfs.img" | sed 's/\t.*/ apparent size of rootfs.img/'
du -h "$out/rootfs.img" | sed 's/\t.*/ on disk/'
cat "$out/build-info.txt"
