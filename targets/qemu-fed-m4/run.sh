#!/usr/bin/env bash
# Federated training on a board among servers, with the board stopped mid-run and
# started again: builds this firmware (one member on QEMU's mps2-an386 with its emulated
# LAN9118) and the `asap` command, boots the board as rank 0 (`-nic user` forwards
# 127.0.0.1:47300 to it) and, once it runs, three `asap node --workload federated`
# processes on 127.0.0.1:47301-47303 (each round paced to at least $COMPUTE_MS ms, so
# that the run outlasts a board's restart). Then:
#   1. when the board printed that it finished $KILL_AT rounds, QEMU is stopped
#      (SIGTERM: the emulation ends at once, the board sends nothing more);
#   2. faults.py listens where the board was until the three servers' frames say they
#      went more than three rounds past the board (they declared it down and carried on
#      without it: under `--wait all` they cannot otherwise), at most 30 s;
#   3. the board boots again, a new incarnation (the host's clock through semihosting),
#      learns from the servers' frames how far they went, skips to their round and
#      trains on with them;
#   4. once it finished a round in its new life, faults.py sends $GARBAGE datagrams
#      that are no frame it may take to its port (random bytes, bad CRCs, frames cut
#      short, of another cluster, for another node, from a stranger, with a key's tag),
#      at most $GARBAGE_RATE a second (2.5 s; unpaced, QEMU's NIC queue drops ~95% of
#      them while the board computes);
# and checks (check.py) that every member ran every round and ends with the same model
# (to 1e-5, value by value: the board prints its model in hex), the board's second life
# skipped rounds, every server declared a peer down, every held-out accuracy is within
# 1% of the reference (one model trained on all shards together), and the garbage
# moved only the board's counters (decode_errors, frames_refused, auth_failures: each
# above 0, at most what was sent of its kind, together all the frames it refused).
# Prints the firmware's flash (and its share by crate, size.py) and static RAM.
# Installs qemu-system-arm when missing.
set -euo pipefail
cd "$(dirname "$0")"
TARGET=thumbv7em-none-eabihf
ROOT=$(cd ../.. && pwd)
MODEL=4096 ROUNDS=30 LOCAL_STEPS=4 CONSENSUS_ROUNDS=30 COMPUTE_MS=100 KILL_AT=${KILL_AT:-3} GARBAGE=10000 GARBAGE_RATE=4000
BOARD_PORT=47300

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    ../qemu-cortex-m/run.sh --install-only
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
ASAP_FED_RANK=0 ASAP_FED_PEERS=10.0.2.15:7000,10.0.2.2:47301,10.0.2.2:47302,10.0.2.2:47303 \
    ASAP_FED_MODEL=$MODEL ASAP_FED_ROUNDS=$ROUNDS ASAP_FED_LOCAL_STEPS=$LOCAL_STEPS \
    ASAP_FED_CONSENSUS_ROUNDS=$CONSENSUS_ROUNDS cargo build --release >&2
(cd "$ROOT" && cargo build --release -j2 -p asap-cli --bin asap >&2)
ELF="../qemu-lan9118/target/$TARGET/release/asap-qemu-fed-m4"
ASAP="$ROOT/target/release/asap"

work=$(mktemp -d)
pids=()
board=
cleanup() {
    for p in "${pids[@]}" $board; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "qemu-fed-m4: FAILED: $*" >&2
    for f in "$work"/board*.out; do [ -f "$f" ] && grep -v '^model \|^progress' "$f" | sed "s/^/$(basename "$f"): /" >&2; done
    for f in "$work"/*.err; do [ -f "$f" ] && grep -v 'Failed to send packet' "$f" | tail -5 | sed "s/^/$(basename "$f"): /" >&2; done
    exit 1
}

# Waits until FILE has a line matching the extended regex, for at most SECONDS; fails
# early when process PID (the one writing FILE) ended without printing it.
wait_for() {
    local file=$1 regex=$2 seconds=$3 pid=$4
    local deadline=$((SECONDS + seconds))
    until grep -Eq "$regex" "$file" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { grep -Eq "$regex" "$file" 2>/dev/null && return 0; fail "no /$regex/ in $(basename "$file"): its process ended"; }
        [ "$SECONDS" -lt "$deadline" ] || fail "no /$regex/ in $(basename "$file") within $seconds s"
        sleep 0.05
    done
}

start_board() {
    timeout 300 qemu-system-arm -M mps2-an386 -nographic \
        -semihosting-config enable=on,target=native \
        -nic user,model=lan9118,hostfwd=udp:127.0.0.1:$BOARD_PORT-10.0.2.15:7000 \
        -kernel "$ELF" >"$work/board$1.out" 2>"$work/qemu$1.err" &
    board=$!
}

# The board first: its hosts start once it runs (it takes up to a second at boot to
# pick a new incarnation, and a host declares a silent peer down after 2 s).
start_board 1
wait_for "$work/board1.out" '^board rank 0: incarnation' 20 "$board"
peers=127.0.0.1:$BOARD_PORT,127.0.0.1:47301,127.0.0.1:47302,127.0.0.1:47303
for r in 1 2 3; do
    "$ASAP" node --rank "$r" --world 4 --peers "$peers" --workload federated --model $MODEL \
        --rounds $ROUNDS --local-steps $LOCAL_STEPS --consensus-rounds $CONSENSUS_ROUNDS \
        --compute-ms $COMPUTE_MS --round-timeout 60 --linger-ms 1000 --json \
        >"$work/host$r.json" 2>"$work/host$r.err" &
    pids+=($!)
done

# 1. Stop the board mid-run.
wait_for "$work/board1.out" "^progress round $KILL_AT " 60 "$board"
kill -TERM "$board"
wait "$board" 2>/dev/null || true
board=
finished=$(grep -o '^progress round [0-9]*' "$work/board1.out" | tail -1 | awk '{ print $3 }')
grep '^board rank 0: incarnation' "$work/board1.out" | sed 's/$/ (first life)/'
echo "board stopped after round $finished of $((ROUNDS + CONSENSUS_ROUNDS))"

# 2. The servers go on without it.
python3 faults.py watch $BOARD_PORT 4 0 "$finished" 30 || fail "the servers did not go on without the board"

# 3. The board again, a new life.
start_board 2
wait_for "$work/board2.out" '^progress round' 60 "$board"
grep -m1 '^board rank 0: incarnation' "$work/board2.out" | sed 's/$/ (second life)/'
grep -m1 '^progress round' "$work/board2.out" | awk '{ printf "board rejoined: its first round finished made it %d rounds done (%d skipped)\n", $3, $5 }'

# 4. Garbage at its port while it runs.
python3 faults.py garbage $BOARD_PORT $GARBAGE 1 0xa5a9 0 4 $GARBAGE_RATE | tee "$work/garbage.out"
grep -q '^board rank 0: counters' "$work/board2.out" && fail "the board ended before the garbage was sent"

status=0
wait "$board" || status=1
board=
for p in "${pids[@]}"; do wait "$p" || status=1; done
pids=()
grep '^board rank\|^panic\|^no \|^round ' "$work/board2.out" | grep -v ': incarnation [0-9]*, joining' || true
python3 check.py $((ROUNDS + CONSENSUS_ROUNDS)) --restarted --peers-down 1 --garbage "$work/garbage.out" \
    "board:board rank 0=$work/board2.out" \
    "host:host rank 1=$work/host1.json" "host:host rank 2=$work/host2.json" "host:host rank 3=$work/host3.json" \
    || status=1
[ "$status" = 0 ] || fail "see above"
BIN="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
if [ -x "$BIN/llvm-size" ]; then
    "$BIN/llvm-size" "$ELF" | sed -n 2p | awk '{ printf "firmware: text %d B (flash), data %d B, bss %d B (static RAM %d B)\n", $1, $2, $3, $2 + $3 }'
    echo "flash by origin (symbol sizes; what LTO inlined into main is counted apart):"
    python3 size.py "$BIN/llvm-nm" "$ELF"
fi
echo "qemu-fed-m4: PASS"
