#!/usr/bin/env bash
# A master cut off from the backup that still leads Raft: does it keep the
# role, and how long do its renewals take while they go through the other
# backup? Brings up a 3-node lab, switches the role over (so that the
# leader sits on the old master, a backup now), cuts the new master off
# from that leader at once, waits SECS seconds, and prints the roles, the
# master's renewal counters and its confirmed renewals per duration bucket.
#
#   cargo build --bins && bash scripts/measure-relay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=target/debug/mailherd-lab
BIN=target/debug/mailherd
SECS=${SECS:-10}
[ -x "$LAB" ] && [ -x "$BIN" ] || { echo "cargo build --bins first" >&2; exit 1; }

field() { # field PYTHON-EXPRESSION: evaluated on `status --json` as d
    "$LAB" status --json | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
masters='[n for n in d["nodes"] if n["role"] == "master"]'

"$LAB" down >/dev/null
trap '"$LAB" down >/dev/null' EXIT
"$LAB" up --nodes 3 >/dev/null
for _ in $(seq 1 100); do
    [ "$(field "len($masters)")" = 1 ] && break
    sleep 0.1
done
from_api=$(field "$masters[0]['api']")
to=$(field '[n["name"] for n in d["nodes"] if n["role"] == "backup"][0]')
ip netns exec mh-client "$BIN" switchover --to "$to" --api "$from_api" \
    --token-file /var/lib/mailherd-lab/api-token >/dev/null
leader=""
for _ in $(seq 1 500); do
    read -r master leader < <(field "($masters[0]['name'] if $masters else '-') + ' ' + str(d['nodes'][0]['raft_leader'])")
    [ "$master" = "$to" ] && [ "$leader" != "$to" ] && [ "$leader" != None ] && break
    leader=""
    sleep 0.02
done
[ -n "$leader" ] || { echo "never saw $to as master with another node leading" >&2; exit 1; }
api=$(field "$masters[0]['api']")
"$LAB" fail "$to" --mode partition --from "$leader"
sleep "$SECS"
echo "after ${SECS} s cut off from the leader $leader:"
field '"  " + ", ".join(n["name"] + " " + n["role"] + " (leader " + str(n["raft_leader"]) + ")" for n in d["nodes"])'
ip netns exec mh-client curl -s "$api/metrics" | python3 -c '
import re, sys
text = sys.stdin.read()
def value(pattern):
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0
confirmed = value(r"^mailherd_lease_renewals_total\{result=\"confirmed\"\} (\S+)")
failed = value(r"^mailherd_lease_renewals_total\{result=\"failed\"\} (\S+)")
relayed = value(r"^mailherd_lease_renewals_relayed_total (\S+)")
print(f"  master: {confirmed:.0f} renewals confirmed, {failed:.0f} failed, {relayed:.0f} relayed")
previous = 0.0
for le, count in re.findall(r"^mailherd_lease_renewal_duration_seconds_bucket\{le=\"([^\"]+)\",result=\"confirmed\"\} (\S+)", text, re.M):
    count = float(count)
    if count > previous:
        print(f"  confirmed within {le} s: {count:.0f}")
    previous = count
'
