#!/bin/sh
# Set workloads' routes from outside their network namespace, four at a time.
# usage: set-routes.sh TOOLS_IMAGE < lines "CONTAINER ROUTER [FRONT_PORT ...]"
# Each helper joins one workload's namespace with NET_ADMIN (the workload never holds it), runs
# the idempotent `ip route replace`, and says whether anything changed. Prints
# "changed|unchanged CONTAINER" per line; exits non-zero if any helper failed.
# FRONT_PORT: the inner port of a transparent TLS front in the container (roles/orthanc): packets
# from it are looked up in table 100, which delivers everything locally, so that the answers to
# connections the front made with the peer's address reach the front, not the peer.
set -eu
image=$1
export HELPER='before=$(ip route show default; ip rule show; ip route show table 100 2>/dev/null)
ip route replace default via "$1"
shift
for port in "$@"; do
  case $port in *[!0-9]*|"") echo "not a port: $port" >&2; exit 2;; esac
  ip rule show | grep -q "sport $port lookup 100" || ip rule add sport "$port" lookup 100 priority 100
done
if [ "$#" -gt 0 ]; then ip route replace local 0.0.0.0/0 dev lo table 100; fi
if [ "$before" = "$(ip route show default; ip rule show; ip route show table 100 2>/dev/null)" ]; then echo unchanged; else echo changed; fi'
xargs -P 4 -L 1 sh -c '
  name=$1; shift
  out=$(docker run --rm --network "container:$name" --cap-add NET_ADMIN "$0" sh -c "$HELPER" route "$@")
  echo "$out $name"' "$image"
