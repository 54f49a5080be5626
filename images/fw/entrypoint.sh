#!/bin/sh
# Load the installed ruleset (or the closed one) before anything else, then run ulogd2 in the
# foreground. A restarted fw comes back with the last ruleset the firewall role installed.
set -eu
ruleset=/etc/pacslab/nftables.nft
[ -s "$ruleset" ] || ruleset=/usr/local/share/pacslab/closed.nft
nft -f "$ruleset"
mkdir -p /var/log/pacslab
exec ulogd
