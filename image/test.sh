#!/usr/bin/env bash
# Boots the amd64 appliance image under qemu-system-x86_64 (TCG: software emulation, no KVM)
# and checks it: porchlight.service reaches READY as the porchlight user, the setup code is
# there (0600), avahi answers porchlight.local, the control API answers through a forward to
# the host's loopback (and refuses a request without the token), the VM cannot reach the
# internet, and an ACPI power-off stops everything cleanly. docs/appliance.md ("Image test").
#
#   image/build.sh && image/test.sh [--dir target/image/amd64] [--timeout 300]
#
# Networking is QEMU's user mode with restrict=on: the guest reaches nothing outside the VM; the
# only way in is one hostfwd from 127.0.0.1:<free port> on the host. The disk is opened with
# snapshot=on, so every run is a first boot and the image file is not changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=
timeout=300
while (($#)); do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) echo "usage: $0 [--dir DIR] [--timeout SECONDS]" >&2; exit 2 ;;
  esac
done
if [[ -z $dir ]]; then
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  dir=${target_dir:-target}/image/amd64
fi

step() { printf '==> %s [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
die() {
  printf 'error: %s\n' "$*" >&2
  if [[ -s ${t:-/nonexistent}/console.log ]]; then
    echo "--- last 40 console lines ---" >&2
    tail -n 40 "$t/console.log" | tr -d '\r' >&2
  fi
  exit 1
}
for f in vmlinuz initrd.img rootfs.img; do
  [[ -s $dir/$f ]] || die "$dir/$f missing: run image/build.sh first"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: apt-get install qemu-system-x86"

t=$(mktemp -d)
qemu_pid=
cleanup() {
  if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  if [[ -n ${KEEP:-} ]]; then echo "console log kept in $t/console.log"; else rm -rf "$t"; fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

step "Booting $dir/rootfs.img (TCG, API forward 127.0.0.1:$port)"
start=$(date +%s.%N)
qemu-system-x86_64 \
  -machine q35 -accel tcg -smp 2 -m 1024 \
  -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 porchlight.imagetest" \
  -drive "file=$dir/rootfs.img,format=raw,if=virtio,snapshot=on" \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$port-10.0.2.15:7879" \
  -device virtio-net-pci,netdev=n0 \
  -display none -monitor none -serial "file:$t/console.log" \
  -qmp "unix:$t/qmp.sock,server=on,wait=off" -no-reboot &
qemu_pid=$!

elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

marker=
while :; do
  # journald prefixes the line ("[  92.0] imagetest-marker[358]: "); keep what follows.
  if [[ -f $t/console.log ]]; then
    marker=$(tr -d '\r' <"$t/console.log" |
      sed -n 's/.*\(PORCHLIGHT-IMAGETEST ready .*\)/\1/p' | head -n 1)
  fi
  [[ -n $marker ]] && break
  kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited before the service was ready"
  [[ $(elapsed | cut -d. -f1) -lt $timeout ]] || die "no READY marker within ${timeout}s"
  sleep 1
done
ready_s=$(elapsed)
step "READY marker after ${ready_s}s"

value() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$marker"; }
check() { [[ $(value "$1") == "$2" ]] || die "$1=$(value "$1"), expected $2 (marker: ${marker% token=*})"; }
check porchlight active
check setup active
check avahi active
check timesyncd active
check user porchlight
check setup_code_mode 600:porchlight
check mdns yes
check outside unreachable
token=$(value token)
[[ $token =~ ^[0-9a-f]{32,}$ ]] || die "no API token in the marker"
code=$(tr -d '\r' <"$t/console.log" | sed -n 's/.*Porchlight setup code: \([A-Z0-9-]*\).*/\1/p' | head -n 1)
[[ $code =~ ^[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}$ ]] || die "no setup code on the console"
echo "services active, runs as porchlight, setup code $code (0600), porchlight.local resolves, internet unreachable"

step "Control API through 127.0.0.1:$port"
api="http://127.0.0.1:$port/api/v1/status"
status=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' "$api") || die "API unreachable"
[[ $status == 401 ]] || die "without the token the API answered $status, expected 401"
body=$(curl -fsS -m 20 -H "Authorization: Bearer $token" "$api") || die "API refused the token"
version=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' <<<"$body") ||
  die "status is not JSON with a version: $body"
echo "GET /api/v1/status: 401 without the token, 200 with it (version $version)"

step "ACPI power-off"
off_start=$(date +%s)
python3 - "$t/qmp.sock" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
json.loads(f.readline())  # greeting
for cmd in ("qmp_capabilities", "system_powerdown"):
    f.write(json.dumps({"execute": cmd}) + "\n")
    f.flush()
    while "return" not in (reply := json.loads(f.readline())):
        pass
EOF
off_ok=false
for _ in $(seq 1 120); do
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    off_ok=true
    break
  fi
  sleep 1
done
$off_ok || die "the VM did not power off within 120 s"
wait "$qemu_pid" || die "QEMU exited with status $?"
qemu_pid=
off_s=$(($(date +%s) - off_start))
# systemd colours its status lines: strip the escape sequences before matching.
console=$(tr -d '\r' <"$t/console.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g')
grep -q 'reboot: Power down' <<<"$console" || die "no clean power-down on the console"
grep -q 'Stopped porchlight.service' <<<"$console" || die "porchlight.service was not stopped cleanly"
if grep -E 'FAILED.*porchlight|porchlight.service: (Failed|Watchdog timeout)' <<<"$console"; then
  die "porchlight.service failed during the run"
fi
echo "powered off cleanly in ${off_s}s"
step "Image test passed: READY after ${ready_s}s, total $(elapsed)s"
