#!/usr/bin/env bash
# Tests porchlight-update's verify/swap/rollback logic without a VM: a scratch root
# (PORCHLIGHT_ROOT), a fake systemctl whose `restart` runs the current binary's `fake-start`,
# and fake porchlight binaries that come up, fail at start, die after READY, or fail their
# selftest. Needs openssl (Ed25519) and coreutils; runs in about 30 s. docs/update.md.
#
#   image/update/test.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
t=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$t"' EXIT
export PORCHLIGHT_ROOT="$t/root" STATE="$t/state" SYSTEMCTL="$t/systemctl"
LIB="$PORCHLIGHT_ROOT/usr/lib/porchlight"
arch=$(uname -m)
pass=0

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
ok() { pass=$((pass + 1)); printf 'ok  %s\n' "$*"; }
current() { readlink "$LIB/current"; }

# The fake service manager: the state in $STATE/active, the restart count in $STATE/restarts.
cat >"$SYSTEMCTL" <<'EOF'
#!/bin/sh
case "$1" in
  restart)
    echo inactive >"$STATE/active"
    if "$PORCHLIGHT_ROOT/usr/lib/porchlight/current/porchlight" fake-start; then
      echo active >"$STATE/active"
    else
      echo failed >"$STATE/active"
      exit 1
    fi ;;
  is-active) cat "$STATE/active"; [ "$(cat "$STATE/active")" = active ] ;;
  show) cat "$STATE/restarts" ;;
esac
EOF
chmod +x "$SYSTEMCTL"

# fake BEHAVIOUR VERSION: a porchlight stand-in. good | fails-start | dies-after-ready |
# fails-selftest.
fake() {
  cat <<EOF
#!/bin/sh
# $2 $RANDOM
case "\$1" in
  --version) echo "porchlight $2" ;;
  selftest) [ "$1" != fails-selftest ] ;;
  fake-start)
    case "$1" in
      fails-start) exit 1 ;;
      dies-after-ready) (sleep 1; echo failed >"\$STATE/active") >/dev/null 2>&1 & ;;
    esac ;;
  --config) [ "\$(cat "\$STATE/active")" = active ] ;;
esac
EOF
}

# A key pair, and the box: version 0.1.0 installed and running.
openssl genpkey -algorithm ed25519 -out "$t/signing.pem" 2>/dev/null
mkdir -p "$PORCHLIGHT_ROOT/etc/porchlight" "$LIB/versions/0.1.0-aaaaaaaaaaaa" "$STATE"
openssl pkey -in "$t/signing.pem" -pubout -out "$PORCHLIGHT_ROOT/etc/porchlight/update-key.pem"
fake good 0.1.0 >"$LIB/versions/0.1.0-aaaaaaaaaaaa/porchlight"
chmod +x "$LIB/versions/0.1.0-aaaaaaaaaaaa/porchlight"
ln -s versions/0.1.0-aaaaaaaaaaaa "$LIB/current"
echo active >"$STATE/active"
echo 0 >"$STATE/restarts"

# release BEHAVIOUR VERSION [ARCH]: a signed update in $t/out-VERSION; prints the manifest path.
release() {
  fake "$1" "$2" >"$t/bin-$2"
  "$here/make-update" "$t/signing.pem" "$t/bin-$2" "$2" "${3:-$arch}" "$t/out-$2-$1"
}
update() { "$here/porchlight-update" install "$1" --timeout 3 --settle 2 2>"$t/log"; }

m=$(release good 0.2.0)
cp "$m" "$t/saved.manifest"
echo "version 9.9.9" >>"$m"
update "$m" && fail "a manifest changed after signing was accepted"
grep -q "bad signature" "$t/log" || fail "expected a bad signature: $(cat "$t/log")"
[[ $(current) == versions/0.1.0-aaaaaaaaaaaa ]] || fail "current moved on a bad signature"
ok "a tampered manifest is refused, nothing changes"

cp "$t/saved.manifest" "$m"
echo "# appended" >>"${m%.manifest}"
update "$m" && fail "a changed binary was accepted"
grep -q "sha256 of .* does not match" "$t/log" || fail "expected a sha256 mismatch: $(cat "$t/log")"
ok "a binary that does not match the signed sha256 is refused"

# A source that changes after it is read (a hostile USB stick, a shared mount): an openssl
# stand-in checks the signature, then swaps the manifest and the binary in the source for
# evil ones. What gets installed must be what was verified.
m=$(release good 0.2.0)
mkdir -p "$t/racebin"
real_openssl=$(command -v openssl)
cat >"$t/racebin/openssl" <<RACE
#!/bin/sh
"$real_openssl" "\$@" || exit \$?
if [ -n "\$RACE_DIR" ] && [ ! -e "\$RACE_DIR/.swapped" ]; then
  touch "\$RACE_DIR/.swapped"
  # The binary becomes evil, and the manifest is rewritten to name the evil binary's hash:
  # an installer that reads the source again after the check would install it.
  for f in "\$RACE_DIR"/*; do
    case "\$f" in
      *.manifest|*.sig) ;;
      *) printf '#!/bin/sh\necho evil >"\$STATE/evil"\n' >"\$f"
         evil=\$(sha256sum "\$f" | cut -c1-64) ;;
    esac
  done
  for f in "\$RACE_DIR"/*.manifest; do
    sed -i "s/^sha256 .*/sha256 \$evil/" "\$f"
  done
fi
RACE
chmod +x "$t/racebin/openssl"
before=$(current)
PATH="$t/racebin:$PATH" RACE_DIR=$(dirname "$m") update "$m" &&
  fail "an update whose source changed after its check was installed"
[ -e "$(dirname "$m")/.swapped" ] || fail "the race did not happen"
# The manifest was read once (its copy verified, with the genuine sha256); the binary read
# after the swap does not match it: refused, nothing changes, nothing of the swap runs.
grep -q "sha256 of .* does not match" "$t/log" || fail "expected a sha256 refusal: $(cat "$t/log")"
[[ $(current) == "$before" ]] || fail "current moved to $(current)"
[ ! -e "$STATE/evil" ] || fail "the swapped binary ran"
ls -d "$LIB"/versions/.incoming.* 2>/dev/null && fail "a staging directory was left behind"
ok "a source that changes after its signature check installs nothing it did not verify"

m=$(release good 0.2.0 "not-$arch")
update "$m" && fail "a wrong-arch update was accepted"
grep -q "update is for not-$arch" "$t/log" || fail "$(cat "$t/log")"
ok "an update for another architecture is refused"

m=$(release good 0.0.9)
update "$m" && fail "a downgrade was accepted"
grep -q "older than the running 0.1.0" "$t/log" || fail "$(cat "$t/log")"
ok "a downgrade is refused without --allow-downgrade"

m=$(release fails-selftest 0.2.0)
update "$m" && fail "a binary failing its selftest was installed"
grep -q "fails its selftest" "$t/log" || fail "$(cat "$t/log")"
[[ $(current) == versions/0.1.0-aaaaaaaaaaaa && $(cat "$STATE/active") == active ]] ||
  fail "the service was touched for a binary that failed its selftest"
ok "a binary failing its selftest on the box is refused before the swap"

m=$(release good 0.2.0)
update "$m" || fail "a good update failed: $(cat "$t/log")"
[[ $(current) == versions/0.2.0-* ]] || fail "current is $(current)"
[[ $(readlink "$LIB/previous") == versions/0.1.0-aaaaaaaaaaaa ]] || fail "previous not kept"
[[ $(cat "$STATE/active") == active ]] || fail "not active after a good update"
good=$(current)
ok "a good update is installed, started and kept ($good)"

m=$(release fails-start 0.3.0)
update "$m" && fail "an update that fails to start was kept"
[[ $(current) == "$good" ]] || fail "no rollback: current is $(current)"
[[ $(cat "$STATE/active") == active ]] || fail "the old version is not running after rollback"
grep -q '^0.3.0-' "$LIB/failed" || fail "the failed version is not recorded"
! ls -d "$LIB"/versions/0.3.0-* 2>/dev/null || fail "the failed version's files are still there"
grep -q "rolling back" "$t/log" || fail "$(cat "$t/log")"
ok "an update that fails at start is rolled back, the old version runs again"

update "$m" && fail "a version that failed before was retried"
grep -q "failed before" "$t/log" || fail "$(cat "$t/log")"
ok "a version that failed is not retried"

m=$(release dies-after-ready 0.3.1)
update "$m" && fail "an update that dies after READY was kept"
[[ $(current) == "$good" && $(cat "$STATE/active") == active ]] || fail "no rollback after a late death"
ok "an update that dies while settling is rolled back"

m=$(release good 0.4.0)
update "$m" || fail "$(cat "$t/log")"
"$here/porchlight-update" rollback --timeout 3 --settle 2 2>"$t/log" || fail "rollback: $(cat "$t/log")"
[[ $(current) == "$good" ]] || fail "manual rollback went to $(current)"
ok "porchlight-update rollback returns to the previous version"

n=$(find "$LIB/versions" -mindepth 1 -maxdepth 1 -type d | wc -l)
((n == 2)) || fail "$n versions kept, expected current and previous: $(ls "$LIB/versions")"
ok "only current and previous are kept on disk"

"$here/porchlight-update" fetch "file://$m" --timeout 3 --settle 2 2>"$t/log" ||
  fail "fetch: $(cat "$t/log")"
[[ $(current) == versions/0.4.0-* ]] || fail "fetch did not install 0.4.0"
ok "fetch downloads manifest, signature and binary (file:// URL) and installs"

printf '\n%d update checks passed\n' "$pass"
