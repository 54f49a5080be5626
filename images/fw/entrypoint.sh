#!/bin/sh
# Load the installed ruleset (or the closed one) before anything else, then run supervisor in the
# foreground: it runs ulogd, and what the roles add (rsyslogd). A restarted fw comes back with the
# last ruleset the firewall role installed, and with the quarantined addresses it includes.
set -eu
ruleset=/etc/pacslab/nftables.nft
[ -s "$ruleset" ] || ruleset=/usr/local/share/pacslab/closed.nft
# A ruleset that no longer loads (its quarantine include damaged, say) leaves the fw closed, not
# stopped: `pacslab up` can still reach it and install a good one.
nft -f "$ruleset" || nft -f /usr/local/share/pacslab/closed.nft
mkdir -p /var/log/pacslab
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
