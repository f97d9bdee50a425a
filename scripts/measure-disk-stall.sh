#!/usr/bin/env bash
# How lease renewals fare while the disk under data_dir is busy flushing
# another program's writes: three agents on loopback keep their Raft data in
# DIR (default /var/tmp/mailherd-disk-stall, on the root disk, not a tmpfs)
# for SECS seconds while `dd` writes 2 GB files to the same disk in a loop
# (STORM=0: no dd, the quiet baseline). Prints the master role's moves, the
# leases lost, and the share of confirmed renewals within each bucket of
# mailherd_lease_renewal_duration_seconds, summed over the three agents.
#
#   cargo build --bin mailherd && bash scripts/measure-disk-stall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MAILHERD_BIN:-target/debug/mailherd}
DIR=${DIR:-/var/tmp/mailherd-disk-stall}
SECS=${SECS:-30}
STORM=${STORM:-1}
BASE=${BASE:-23100}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --bin mailherd first" >&2; exit 1; }
case "$(stat -f -c %T "$(dirname "$DIR")")" in
tmpfs | ramfs) echo "DIR=$DIR is on a tmpfs: put it on the disk to measure" >&2; exit 1 ;;
esac
rm -rf "$DIR"
mkdir -p "$DIR"
members=""
for i in 1 2 3; do
    members+="[[members]]
name = \"n$i\"
id = $i
peer = \"127.0.0.1:$((BASE + i))\"
api = \"127.0.0.1:$((BASE + 100 + i))\"

"
done
for i in 1 2 3; do
    cat >"$DIR/n$i.toml" <<TOML
[node]
name = "n$i"
data_dir = "$DIR/n$i"

[cluster]
name = "disk-stall"

$members[api]
listen = "127.0.0.1:$((BASE + 100 + i))"
peer_listen = "127.0.0.1:$((BASE + i))"
TOML
done
pids=()
storm=""
cleanup() {
    [ -n "$storm" ] && kill "$storm" 2>/dev/null || true
    pkill -f "dd if=/dev/zero of=$DIR/storm" 2>/dev/null || true
    rm -f "$DIR/storm"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
for i in 1 2 3; do
    RUST_LOG=warn "$BIN" agent --config "$DIR/n$i.toml" 2>"$DIR/n$i.log" &
    pids+=($!)
done
sleep 4
if [ "$STORM" = 1 ]; then
    (while true; do dd if=/dev/zero of="$DIR/storm" bs=1M count=2000 status=none; rm -f "$DIR/storm"; done) &
    storm=$!
fi
sleep "$SECS"
if [ -n "$storm" ]; then
    kill "$storm"
    storm=""
    pkill -f "dd if=/dev/zero of=$DIR/storm" || true
    rm -f "$DIR/storm"
fi
for i in 1 2 3; do
    curl -sf "http://127.0.0.1:$((BASE + 100 + i))/metrics" >"$DIR/metrics-n$i.txt"
done
epoch=$(curl -sf "http://127.0.0.1:$((BASE + 101))/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["epoch"])')
python3 - "$DIR" "$epoch" "$STORM" <<'PY'
import glob, re, sys
directory, epoch, storm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
buckets, other = {}, 0.0
for path in glob.glob(directory + "/metrics-n*.txt"):
    for line in open(path):
        m = re.match(r'mailherd_lease_renewal_duration_seconds_bucket\{le="([^"]+)",result="(\w+)"\} (\S+)', line)
        if not m:
            continue
        le, result, count = m.group(1), m.group(2), float(m.group(3))
        if result == "confirmed":
            buckets[le] = buckets.get(le, 0.0) + count
        elif le == "+Inf":
            other += count
lost = sum(open(p, errors="replace").read().count("could not be renewed") for p in glob.glob(directory + "/n*.log"))
slow = sum(open(p, errors="replace").read().count("raft storage is slow") for p in glob.glob(directory + "/n*.log"))
total = buckets.get("+Inf", 0.0)
shares = " ".join(
    f"<={float(le) * 1000:.0f}ms:{buckets[le] / total * 100:.1f}%"
    for le in sorted((le for le in buckets if le != "+Inf"), key=float)
    if 0.01 <= float(le) <= 0.7
) if total else "none"
print(f"storm={storm} assignments_after_the_first={epoch - 1} leases_lost={lost} slow_storage_warnings={slow} "
      f"renewals_confirmed={int(total)} not_confirmed={int(other)} {shares}")
PY
