#!/bin/sh
# Set workloads' routes from outside their network namespaces, with one short-lived helper.
# usage: set-routes.sh TOOLS_IMAGE < lines "CONTAINER ROUTER [FRONT_PORT ...]"
# The helper (a container of the tools image) sees the engine's processes (--pid host) and enters
# each workload's network namespace with nsenter: CAP_SYS_ADMIN for setns, CAP_SYS_PTRACE to open
# another process's namespace, CAP_NET_ADMIN for the routes, and no other capability. The
# workloads themselves never hold NET_ADMIN. One helper for every workload costs an `up` one
# container start instead of one per workload (about 2 s of every warm `up` on 2 cores).
# In each namespace it runs the idempotent `ip route replace` and says whether anything changed.
# Prints "changed|unchanged CONTAINER" per line; exits non-zero if any workload was not running
# or its routes could not be set.
# FRONT_PORT: the inner port of a transparent TLS front in the container (roles/orthanc): packets
# from it are looked up in table 100, which delivers everything locally, so that the answers to
# connections the front made with the peer's address reach the front, not the peer.
set -eu
image=$1
lines=$(cat)
[ -n "$lines" ] || exit 0
# What runs in one workload's namespace: ROUTE ROUTER [FRONT_PORT ...]
export ROUTE='before=$(ip route show default; ip rule show; ip route show table 100 2>/dev/null)
ip route replace default via "$1"
shift
for port in "$@"; do
  case $port in *[!0-9]*|"") echo "not a port: $port" >&2; exit 2;; esac
  ip rule show | grep -q "sport $port lookup 100" || ip rule add sport "$port" lookup 100 priority 100
done
if [ "$#" -gt 0 ]; then ip route replace local 0.0.0.0/0 dev lo table 100; fi
if [ "$before" = "$(ip route show default; ip rule show; ip route show table 100 2>/dev/null)" ]; then echo unchanged; else echo changed; fi'
# The engine's process id of each workload (0 when it is not running, none when it does not
# exist), put after its name: "CONTAINER PID ROUTER [FRONT_PORT ...]".
pids=$(echo "$lines" | cut -d' ' -f1 | xargs docker inspect --format '{{.Name}} {{.State.Pid}}' 2>/dev/null || true)
echo "$lines" | awk -v pids="$pids" '
  BEGIN { n = split(pids, row, "\n"); for (i = 1; i <= n; i++) { split(row[i], f, " "); sub("^/", "", f[1]); pid[f[1]] = f[2] } }
  { name = $1; $1 = ""; print name, (name in pid ? pid[name] : "none") $0 }' \
| docker run --rm -i --pid host --network none --cap-drop ALL --cap-add SYS_ADMIN --cap-add SYS_PTRACE --cap-add NET_ADMIN \
    --env ROUTE "$image" sh -c '
status=0
while read -r name pid router ports; do
  case $pid in ""|0|*[!0-9]*) echo "$name: not running" >&2; status=1; continue;; esac
  # $ports unquoted: one word per port
  if out=$(nsenter -t "$pid" -n sh -c "$ROUTE" route "$router" $ports 2>&1); then
    echo "$out $name"
  else
    echo "$name: $out" >&2; status=1
  fi
done
exit $status'
