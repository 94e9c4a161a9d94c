#!/usr/bin/env bash
# Boots the appliance image under QEMU with software emulation (TCG; no KVM here) and checks
# it: porchlight.service reaches READY as the porchlight user, the setup code is there (0600),
# avahi answers porchlight.local and publishes the web UI, the control API answers through a
# forward to the host's loopback (and refuses a request without the token), the web UI answers
# and accepts the setup code from the console, the VM cannot reach the internet; then, inside
# the VM, a signed update is taken through porchlight-update and two bad ones are refused or
# rolled back; finally an ACPI power-off stops everything cleanly. docs/appliance.md ("Image
# test"), docs/update.md ("What is tested").
#
#   image/build.sh --test-units && image/test.sh
#   image/build.sh --arch arm64 --test-units && image/test.sh --arch arm64
#
# Options:
#   --arch amd64|arm64    which image (default amd64): qemu-system-x86_64 -M q35, or
#                         qemu-system-aarch64 -M virt with a Cortex-A72
#   --dir DIR             the image (default target/image/ARCH)
#   --timeout SECONDS     power-on to the READY marker (default 300 amd64, 900 arm64)
#   --no-update           skip the in-VM update test
#   --signing-key PEM     Ed25519 private key for the update test when the image was built
#                         with --update-key (default: a fresh key, which the VM trusts only
#                         because the image has none)
#   KEEP=1 in the environment keeps the console log and the update disk.
#
# The image must be built with --test-units (the hooks below are not in an image for boxes).
# Networking is QEMU's user mode with restrict=on: the guest reaches nothing outside the VM; the
# only ways in are three hostfwds from 127.0.0.1 on the host (control API relay, web UI, update
# trigger). The update test hands the VM a read-only disk with the signed artifacts. The root disk is opened with snapshot=on, so every run is a first boot and
# the image file is not changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
arch=amd64
dir=
timeout=
update=true
signing_key=
while (($#)); do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --no-update) update=false; shift ;;
    --signing-key) signing_key=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

step() { printf '==> %s [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
die() {
  printf 'error: %s\n' "$*" >&2
  if [[ -s ${t:-/nonexistent}/console.log ]]; then
    echo "--- last 40 console lines ---" >&2
    tail -n 40 "$t/console.log" | tr -d '\r' >&2
  fi
  exit 1
}

case "$arch" in
  amd64)
    qemu=(qemu-system-x86_64 -machine q35 -accel tcg)
    console=ttyS0 uname_m=x86_64 qemu_pkg=qemu-system-x86
    timeout=${timeout:-300}
    ;;
  arm64)
    # virt: QEMU's generic board, whose devices (PL011 serial, PCIe virtio) the Debian arm64
    # kernel drives out of the box; the board firmware of a real Pi is not emulated.
    qemu=(qemu-system-aarch64 -machine virt -cpu cortex-a72 -accel tcg)
    console=ttyAMA0 uname_m=aarch64 qemu_pkg=qemu-system-arm
    timeout=${timeout:-900}
    ;;
  *) die "--arch must be amd64 or arm64" ;;
esac
if [[ -z $dir ]]; then
  target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  dir=${target_dir:-target}/image/$arch
fi
for f in vmlinuz initrd.img rootfs.img build-info.txt; do
  [[ -s $dir/$f ]] || die "$dir/$f missing: run image/build.sh --arch $arch --test-units first"
done
grep -q '^test units: installed' "$dir/build-info.txt" ||
  die "$dir was built without the image test's units: rebuild with image/build.sh --arch $arch --test-units"
grep -q "^debian .* $arch from " "$dir/build-info.txt" || die "$dir is not an $arch image ($(sed -n 2p "$dir/build-info.txt"))"
command -v "${qemu[0]}" >/dev/null || die "${qemu[0]} missing: apt-get install $qemu_pkg"
command -v debugfs >/dev/null || die "debugfs missing: apt-get install e2fsprogs"

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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
web_port=$(free_port)
ctl_port=$(free_port)
[[ $api_port != "$web_port" && $ctl_port != "$api_port" && $ctl_port != "$web_port" ]] ||
  die "could not pick three distinct free ports; run again"

# --- update artifacts (before the boot, so the disk can be attached) ------------------------
extra=()
if $update; then
  step "Update artifacts for the in-VM test"
  version_dir=$(sed -n '1s/^porchlight [^ ]* (\([^)]*\)).*/\1/p' "$dir/build-info.txt")
  version=${version_dir%-*}
  [[ -n $version_dir && -n $version ]] || die "no version in $dir/build-info.txt"
  # The image's own binary (same build, same architecture), read out of the filesystem image.
  debugfs -R "dump /usr/lib/porchlight/versions/$version_dir/porchlight $t/installed" \
    "$dir/rootfs.img" 2>/dev/null
  [[ -s $t/installed ]] || die "cannot read /usr/lib/porchlight/versions/$version_dir/porchlight from $dir/rootfs.img"
  if grep -q '^update key sha256' "$dir/build-info.txt"; then
    [[ -n $signing_key ]] ||
      die "$dir has a baked-in update key: pass its private half with --signing-key, or --no-update"
  fi
  if [[ -z $signing_key ]]; then
    signing_key=$t/signing.pem
    openssl genpkey -algorithm ed25519 -out "$signing_key" 2>/dev/null
  fi
  disk=$t/disk
  mkdir "$disk"
  openssl pkey -in "$signing_key" -pubout -out "$disk/update-key.pem"
  # sign NAME BINARY VERSION: make-update as a release would, under a fixed manifest name.
  sign() {
    local m
    m=$(image/update/make-update "$signing_key" "$2" "$3" "$uname_m" "$t/out-$1")
    cp "$t/out-$1/$(sed -n 's/^file //p' "$m")" "$disk/"
    cp "$m" "$disk/$1.manifest"
    cp "$m.sig" "$disk/$1.manifest.sig"
  }
  # good: a different build (the same program with bytes appended, so a new sha256 and a new
  # versions/ directory); the test checks the service's process runs it afterwards.
  cp "$t/installed" "$t/good"
  printf '\nporchlight image test update\n' >>"$t/good"
  sign good "$t/good" "$version.1"
  # Stand-ins for broken builds: they pass `--version` (and one its selftest) by handing over
  # to the image's original binary, which stays on disk as `previous` after the good update.
  # shellcheck disable=SC2016 # "$1" and "$@" belong to the generated script
  fake() {
    printf '#!/bin/sh\n# image test: %s\n' "$1"
    printf 'case "$1" in %s) echo "imagetest: %s" >&2; exit 1 ;; esac\n' "$2" "$1"
    printf 'exec /usr/lib/porchlight/versions/%s/porchlight "$@"\n' "$version_dir"
  }
  fake "fails its selftest" selftest >"$t/bad-selftest"
  fake "exits at start" run >"$t/bad-start"
  sign bad-selftest "$t/bad-selftest" "$version.3"
  sign bad-start "$t/bad-start" "$version.2"
  mkfs.ext4 -q -F -L PLUPDATE -d "$disk" "$t/update.img" 64M
  extra=(-drive "file=$t/update.img,format=raw,if=virtio,readonly=on")
  echo "good $version.1, bad-selftest $version.3, bad-start $version.2 for $uname_m, signed with $(basename "$signing_key")"
fi

step "Booting $dir/rootfs.img ($arch, TCG; API 127.0.0.1:$api_port, web 127.0.0.1:$web_port)"
start=$(date +%s.%N)
"${qemu[@]}" -smp 2 -m 1024 \
  -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
  -append "root=/dev/vda rw console=$console porchlight.imagetest" \
  -drive "file=$dir/rootfs.img,format=raw,if=virtio,snapshot=on" \
  -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$api_port-10.0.2.15:7879,hostfwd=tcp:127.0.0.1:$web_port-10.0.2.15:8080,hostfwd=tcp:127.0.0.1:$ctl_port-10.0.2.15:7880" \
  -device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
  "${extra[@]}" \
  -display none -monitor none -serial "file:$t/console.log" \
  -qmp "unix:$t/qmp.sock,server=on,wait=off" -no-reboot &
qemu_pid=$!

elapsed() { awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }'; }

marker=
while :; do
  # journald prefixes the line ("[  92.0] marker[358]: "); keep what follows.
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

value() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
check() { [[ $(value "$1" "$marker") == "$2" ]] || die "$1=$(value "$1" "$marker"), expected $2 (marker: ${marker% token=*})"; }
check porchlight active
check setup active
check avahi active
check timesyncd active
check user porchlight
check setup_code_mode 600:porchlight
check mdns yes
check http_service yes
check web yes
check outside unreachable
token=$(value token "$marker")
[[ $token =~ ^[0-9a-f]{32,}$ ]] || die "no API token in the marker"
code=$(tr -d '\r' <"$t/console.log" | sed -n 's/.*Porchlight setup code: \([A-Z0-9-]*\).*/\1/p' | head -n 1)
[[ $code =~ ^[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}-[2-9A-Z]{4}$ ]] || die "no setup code on the console"
echo "services active, runs as porchlight, setup code $code (0600), porchlight.local resolves,"
echo "avahi publishes _http._tcp, something listens on :8080, internet unreachable"

step "Control API through 127.0.0.1:$api_port"
api="http://127.0.0.1:$api_port/api/v1/status"
# api_status: GET /api/v1/status with the token; prints the version it reports.
api_status() {
  local body
  body=$(curl -fsS -m 20 -H "Authorization: Bearer $token" "$api") || die "API refused the token"
  python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' <<<"$body" ||
    die "status is not JSON with a version: $body"
}
status=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' "$api") || die "API unreachable"
[[ $status == 401 ]] || die "without the token the API answered $status, expected 401"
version_api=$(api_status)
echo "GET /api/v1/status: 401 without the token, 200 with it (version $version_api)"

step "Web UI through 127.0.0.1:$web_port (the box's port 8080)"
web="http://127.0.0.1:$web_port"
page=$(curl -fsS -m 20 "$web/") || die "the web UI did not answer GET /"
grep -qi '<html' <<<"$page" || die "GET / is not an HTML page"
# setup_needed STATE: GET /auth/state must say setup_needed is STATE (true or false).
setup_needed() {
  local state
  state=$(curl -fsS -m 20 "$web/auth/state") || die "GET /auth/state failed"
  [[ $(python3 -c 'import json,sys; print(str(json.load(sys.stdin)["setup_needed"]).lower())' <<<"$state") == "$1" ]] ||
    die "GET /auth/state: $state, expected setup_needed $1"
}
setup_needed true
# First-run setup with the code the console showed: the file porchlight-setup-code.service
# wrote is the one the daemon checks.
status=$(curl -sS -m 60 -o "$t/setup.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d "{\"code\":\"$code\",\"password\":\"image test password 2026\"}" "$web/auth/setup") ||
  die "POST /auth/setup failed"
[[ $status == 200 ]] || die "POST /auth/setup with the console's setup code answered $status: $(cat "$t/setup.json")"
setup_needed false
echo "GET / serves the UI, first-run setup with the console's code accepted"

update_s=
if $update; then
  step "Updates inside the VM (porchlight-update)"
  update_start=$(date +%s)
  # Say `update` to porchlight-imagetest-update.socket (through the third hostfwd), then relay
  # what the VM reports until it is done.
  python3 - "$ctl_port" >"$t/update.log" <<'EOF' || die "the update test did not finish: $(cat "$t/update.log")"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"update\n")
s.settimeout(600)
buf = b""
while True:
    data = s.recv(4096)
    if not data:
        sys.exit("the VM closed the control port")
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        line = line.decode(errors="replace").strip()
        print(line, flush=True)
        if line.endswith("update-done"):
            sys.exit(0)
        if "update-error" in line:
            sys.exit(1)
EOF
  update_s=$(($(date +%s) - update_start))
  sed 's/^PORCHLIGHT-IMAGETEST /  /' "$t/update.log"
  # report NAME: the VM's line for that step.
  report() { grep "PORCHLIGHT-IMAGETEST $1 " "$t/update.log" || die "no $1 report from the VM"; }
  ucheck() { [[ $(value "$2" "$1") == "$3" ]] || die "$2=$(value "$2" "$1"), expected $3 (${1#PORCHLIGHT-IMAGETEST })"; }
  good_line=$(report update-good)
  good_dir=$(value current "$good_line")
  ucheck "$good_line" rc 0
  ucheck "$good_line" api yes
  ucheck "$good_line" active active
  ucheck "$good_line" exe "$good_dir"
  [[ $good_dir == "$version.1-"* ]] || die "after the good update current is $good_dir, expected $version.1-…"
  line=$(report update-bad-selftest)
  ucheck "$line" rc 1
  ucheck "$line" current "$good_dir"
  ucheck "$line" exe "$good_dir"
  ucheck "$line" restarts "$(value restarts "$good_line")"
  tr -d '\r' <"$t/console.log" | grep -q "imagetest-update: .*fails its selftest" ||
    die "porchlight-update did not say the selftest failed"
  line=$(report update-bad-start)
  ucheck "$line" rc 1
  ucheck "$line" current "$good_dir"
  ucheck "$line" exe "$good_dir"
  ucheck "$line" active active
  ucheck "$line" api yes
  [[ $(value failed "$line") == *"$version.2-"* ]] || die "the failed build is not listed: $line"
  tr -d '\r' <"$t/console.log" | grep -q "imagetest-update: .*rolling back" ||
    die "porchlight-update did not report a rollback"
  # From outside again. The daemon writes a fresh API token at every start, so the token from
  # the boot must now be refused (the service really restarted); the in-VM check above used
  # the new one. The web UI's admin password, set before the updates, must still be set.
  status=$(curl -sS -m 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$api") ||
    die "API unreachable after the updates"
  [[ $status == 401 ]] || die "the boot's API token still works after the update ($status): did the service restart?"
  setup_needed false
  echo "good update kept ($good_dir runs, API answers), bad selftest refused before the swap,"
  echo "bad start rolled back to $good_dir; the API (fresh token) and the web UI (same data)"
  echo "answer from the host; ${update_s}s"
fi

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
for _ in $(seq 1 180); do
  if ! kill -0 "$qemu_pid" 2>/dev/null; then
    off_ok=true
    break
  fi
  sleep 1
done
$off_ok || die "the VM did not power off within 180 s"
wait "$qemu_pid" || die "QEMU exited with status $?"
qemu_pid=
off_s=$(($(date +%s) - off_start))
# systemd colours its status lines: strip the escape sequences before matching. The bad
# update makes porchlight.service fail on purpose, so only the console after the update test
# counts for the shutdown checks.
console=$(tr -d '\r' <"$t/console.log" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g')
if $update; then
  console=$(sed -n '/PORCHLIGHT-IMAGETEST update-done/,$p' <<<"$console")
fi
grep -q 'reboot: Power down' <<<"$console" || die "no clean power-down on the console"
grep -q 'Stopped porchlight.service' <<<"$console" || die "porchlight.service was not stopped cleanly"
if grep -E 'FAILED.*porchlight|porchlight.service: (Failed|Watchdog timeout)' <<<"$console"; then
  die "porchlight.service failed during the run"
fi
echo "powered off cleanly in ${off_s}s"
step "Image test ($arch) passed: READY after ${ready_s}s,${update_s:+ updates ${update_s}s,} total $(elapsed)s"
