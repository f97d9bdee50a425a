#!/usr/bin/env bash
# The demo: installs what is missing, builds, brings up a three-node lab
# cluster with real Postfix and Dovecot, sends a mail, powers off the
# master and shows the failover live from a client's point of view, then
# reads the mail back over IMAP through the floating IP. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
echo "== building"
cargo build --bins --locked
lab=target/debug/mailherd-lab

$lab down >/dev/null 2>&1 || true
echo "== bringing up 3 nodes with Postfix + Dovecot (returns once a master serves)"
$lab up --nodes 3 --stack mail

master=$($lab status --json | jq -r '.nodes[] | select(.role == "master") | .name')
echo "== master is $master; sending a mail to the floating IP"
$lab mail send --subject "sent before the failover"

echo "== powering off $master; the client probes the SMTP banner every 20 ms"
$lab watch --interval-ms 20 --duration-ms 6000 &
watcher=$!
sleep 1
$lab fail "$master" --mode power
wait $watcher

$lab status
echo "== reading the mailbox over IMAP on the floating IP (served by the new master)"
$lab mail list

echo "== powering $master back on: it rejoins as a backup"
$lab heal "$master"
sleep 3
$lab status
echo
echo "The lab is still up: try 'mailherd-lab fail NODE --mode service|partition',"
echo "'mailherd-lab status --json', and 'target/debug/mailherd-lab down' to remove it."
