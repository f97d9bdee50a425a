#!/usr/bin/env bash
# The figures of BENCHMARKS.md, all of them, from one command (as root):
#
#   bash scripts/bench.sh            # everything, about 25 minutes here
#   ROUNDS=1 FAULTS=20 bash scripts/bench.sh   # a quick look
#
# Each run's JSON lands in target/bench-results/; a summary is printed at
# the end. Timings suffer from other work on the host: run it on an idle
# machine (each JSON records the load average at its end).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-5}"
faults="${FAULTS:-200}"
footprint="${FOOTPRINT_SECS:-60}"
out=target/bench-results
lab=./target/release/mailherd-lab

bash scripts/install-deps.sh
cargo build --release --bins --locked
mkdir -p "$out"
"$lab" down >/dev/null 2>&1 || true

run() {
    local name="$1"
    shift
    echo "== $name: mailherd-lab $*" >&2
    # RUST_BACKTRACE makes every error capture a backtrace: not what an
    # operator's agent runs with.
    env -u RUST_BACKTRACE "$lab" "$@" --json >"$out/$name.json"
}

run bench-3 bench --rounds "$rounds" --footprint-secs "$footprint"
run bench-5 bench --rounds "$rounds" --nodes 5 --managers mailherd --footprint-secs 0
run bench-7 bench --rounds "$rounds" --nodes 7 --managers mailherd --footprint-secs 0
run bench-mail bench --rounds "$rounds" --stack mail --managers mailherd --footprint-secs 0
run nemesis nemesis --faults "$faults" --seed 1

echo
echo "median outage (ms) by mode, $rounds rounds each:"
for name in bench-3 bench-5 bench-7 bench-mail; do
    jq -r --arg name "$name" '
        [.nodes, .stack] as [$nodes, $stack]
        | to_entries[]
        | select(.value | type == "object" and (.power | type) == "object")
        | "\($name) (\($nodes) nodes, \($stack)) \(.key): "
          + ([.value | to_entries[] | "\(.key) \(.value.median_ms)"] | join(", "))
    ' "$out/$name.json"
done
jq -r '"keepalived / mailherd: " + ([.ratio | to_entries[] | "\(.key) \(.value)"] | join(", "))' "$out/bench-3.json"
jq -r '"footprint: RSS \(.agent_rss_kib) KiB (anon \(.agent_rss_anon_kib), file \(.agent_rss_file_kib)), CPU \(.agent_cpu_percent) % master, \(.backup_agent_cpu_percent) % backup"' "$out/bench-3.json"
jq -r '"mail: accepted \(.accepted_messages), lost \(.lost_messages), dual holder \(.dual_holder_ms) ms"' "$out/bench-mail.json"
jq -r '"nemesis: \(.faults) faults, seed \(.seed): dual holder \(.dual_holder_ms) ms, accepted \(.accepted_messages), lost \(.lost_messages), longest outage \(.longest_outage_ms) ms, breaker trips \(.breaker_trips)"' "$out/nemesis.json"
