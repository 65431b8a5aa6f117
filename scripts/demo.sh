#!/usr/bin/env bash
# The two-tier story on one machine: a local speed vault plus an FTP server on
# loopback, a backup while the server is down, self-healing sync, a restore
# from the server alone, and a second installation being refused.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
W="$PWD/demo-work"
rm -rf "$W" && mkdir -p "$W"
export TIERVAULT_PASSWORD="demo passphrase"
export TIERVAULT_HOME="$W/home"
TV=("$BIN/tiervault")  # the default reconnect settings (10 attempts)
PORT=$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
FTP_ROOT="$W/ftp-server"
mkdir -p "$FTP_ROOT"
SERVER_PID=""
start_server() {
    "$BIN/python" tests/servers/ftp_server.py --root "$FTP_ROOT" --port "$PORT" \
        --user demo --password secret >"$W/ftp.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        "$BIN/python" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "FTP server did not start"; exit 1
}
stop_server() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""; }
trap stop_server EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ tiervault %s\n' "$*"; "${TV[@]}" "$@"; local rc=$?; echo "(exit code $rc)"; return 0; }

step "A sample folder to protect"
mkdir -p "$W/data/reports" "$W/data/photos"
for i in $(seq 1 200); do echo "report $i: $(date -u) $RANDOM" >"$W/data/reports/r$i.txt"; done
head -c 8000000 /dev/urandom >"$W/data/photos/holiday.raw"
seq 1 300000 >"$W/data/numbers.txt"
ls -R "$W/data" | head -5

step "Start the FTP server on 127.0.0.1:$PORT (\"the server\")"
start_server
echo "server pid $SERVER_PID"

step "Initialise a vault on the speed vault + the server"
run init "$W/speed-vault" "ftp://demo:secret@127.0.0.1:$PORT/vault"

step "First backup: written to both tiers at once"
run backup "$W/data"
run tiers

step "The server goes away (the laptop is on the road)"
stop_server
echo "more work done offline" >"$W/data/reports/offline-note.txt"
run backup "$W/data" --no-sync
step "The backup completed on the speed vault; the server is offline and missed it"
run tiers

step "The server is back: it is detected as unsynchronized and brought level"
start_server
run tiers
run sync
run tiers
echo "files on the two tiers are identical:"
diff -r --exclude=.\* "$W/speed-vault" "$FTP_ROOT/vault" && echo "  yes, byte for byte"

step "Restore from the server alone (the speed vault disk is unplugged)"
mv "$W/speed-vault" "$W/speed-vault.unplugged"
run restore latest "$W/restored"
diff -r "$W/data" "$W/restored$W/data" && echo "restored tree is identical to the source"
mv "$W/speed-vault.unplugged" "$W/speed-vault"

step "A copied installation (a cloned laptop) tries to write to the same vault"
cp -a "$W/home" "$W/home-copy"
echo "change" >>"$W/data/numbers.txt"
run backup "$W/data"
printf '$ TIERVAULT_HOME=home-copy tiervault backup ...\n'
TIERVAULT_HOME="$W/home-copy" "${TV[@]}" backup "$W/data"
echo "(exit code $? : the second installation is refused, nothing written)"

step "Snapshots"
run snapshots
echo
echo "demo finished; everything is under $W"
