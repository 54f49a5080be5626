#!/bin/sh
# Set workloads' default routes from outside their network namespace, four at a time.
# usage: set-routes.sh TOOLS_IMAGE < lines "CONTAINER ROUTER"
# Each helper joins one workload's namespace with NET_ADMIN (the workload never holds it), runs
# the idempotent `ip route replace`, and says whether the route changed. Prints
# "changed|unchanged CONTAINER" per line; exits non-zero if any helper failed.
set -eu
image=$1
export HELPER='before=$(ip route show default)
ip route replace default via "$1"
if [ "$before" = "$(ip route show default)" ]; then echo unchanged; else echo changed; fi'
xargs -P 4 -L 1 sh -c '
  out=$(docker run --rm --network "container:$1" --cap-add NET_ADMIN "$0" sh -c "$HELPER" route "$2")
  echo "$out $1"' "$image"
