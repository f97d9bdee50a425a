#!/usr/bin/env bash
# Measures storage replication in the lab (`up --stack mail --storage
# btrfs`, a snapshot every 2 s): for each of ROUNDS power failures of the
# master, the master's last transfers to its peers (bytes, ms, incremental
# or full) and the data age the new master started from (the failover's
# RPO, as the agent reports it in /status). Prints one JSON line per
# observation. As root, after `cargo build --bins`:
#
#   ROUNDS=5 bash scripts/measure-replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-5}"
lab="${LAB_BIN:-./target/debug/mailherd-lab}"
agent="$(dirname "$lab")/mailherd"
"$lab" down >/dev/null 2>&1 || true
[ -n "${KEEP:-}" ] || trap '"$lab" down >/dev/null 2>&1 || true' EXIT
"$lab" up --stack mail --storage btrfs >/dev/null

master_of() {
    "$lab" status --json | jq -r '[.nodes[] | select(.role == "master") | .name] | if length == 1 then .[0] else "" end'
}

for round in $(seq 1 "$rounds"); do
    master=$(master_of)
    for i in 1 2 3; do
        "$lab" mail send --subject "round-$round-$i" >/dev/null
    done
    # A few snapshot rounds with the new mail in them, then a random
    # moment within the next interval, so the failover lands anywhere
    # between two snapshots.
    sleep "5.$((RANDOM % 10))$((RANDOM % 10))"
    "$lab" status --json | jq -c --arg m "$master" --argjson r "$round" \
        '.nodes[] | select(.name == $m) | .replication[0].peers[]
         | {round: $r, transfer_to: .peer, bytes, duration_ms, incremental: (.parent != null), error}'
    "$lab" fail "$master" --mode power >/dev/null
    new=""
    for _ in $(seq 1 240); do
        new=$(master_of)
        [ -n "$new" ] && [ "$new" != "$master" ] && break
        sleep 0.25
    done
    "$lab" status --json | jq -c --arg m "$new" --argjson r "$round" \
        '.nodes[] | select(.name == $m)
         | {round: $r, failover_to: .name, started_from: .replication[0].opened_from,
            data_age_ms: .replication[0].opened_data_age_ms}'
    "$lab" heal "$master" >/dev/null
    # The breaker (2 automatic failovers an hour by default) would block
    # the next round: reset it, as an operator would after a test.
    status=$("$lab" status --json)
    ip netns exec "$(jq -r .client_namespace <<<"$status")" "$agent" breaker reset \
        --api "$(jq -r --arg m "$new" '.nodes[] | select(.name == $m) | .api' <<<"$status")" \
        --token-file "$(jq -r .token_file <<<"$status")" >/dev/null
    sleep 3
done
