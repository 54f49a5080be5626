#!/bin/bash
# Runs inside the fresh container (tests/fresh/fresh_check.py starts it): a bare Debian 12 minbase
# root filesystem, root, a clean copy of the repository in /root/pacslab, the host's registry
# configuration mounted read-only. Installs what the README assumes (Debian's python3 and make),
# runs the README's install path through `make doctor`, and asserts what a new user must see.
# Exit 0: all held; 1: an assertion failed (the line says which).
set -euo pipefail
cd /root/pacslab

fail() { echo "FRESH CHECK FAILED: $*" >&2; exit 1; }
t0=$(date +%s)
step() { echo; echo "== [$(($(date +%s) - t0)) s] $*"; }

# Only the host's apt sources count (mounted read-only in sources.list.d); the bootstrapped image's
# own sources.list names bookworm main only.
rm -f /etc/apt/sources.list

step "Before: no python3, no make (a bare bookworm minbase)"
! command -v python3 >/dev/null || fail "the image already has python3: $(command -v python3)"
! command -v make >/dev/null || fail "the image already has make"

step "Install Debian's python3 and make, as a standard Debian install has them"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 make >/dev/null
python3 --version
[ "$(readlink -f "$(command -v python3)")" = /usr/bin/python3.11 ] || fail "python3 is not Debian's /usr/bin/python3.11"
! python3 -m pip --version >/dev/null 2>&1 || fail "Debian's python3 has pip: the Makefile's venv path would not be tested"
[ -f /usr/lib/python3.11/EXTERNALLY-MANAGED ] || fail "Debian's python3 is not marked externally managed (PEP 668)"
! dpkg -s python3-venv >/dev/null 2>&1 || fail "python3-venv is already installed: the Makefile's apt path would not be tested"

step "make doctor (the Makefile makes .venv, installing python3-venv through apt, then runs pacslab doctor)"
set +e
make doctor >/tmp/make-doctor.out 2>&1
make_rc=$?
set -e
cat /tmp/make-doctor.out
grep -q "installing Debian's python3-venv" /tmp/make-doctor.out || fail "make did not take its python3-venv path"
dpkg -s python3-venv >/dev/null 2>&1 || fail "python3-venv is not installed after make"
# No Docker engine in here: doctor must say so and exit 4, which make reports as its recipe's error.
[ "$make_rc" -ne 0 ] || fail "make doctor succeeded although no Docker engine runs here"
grep -q "doctor\] Error 4" /tmp/make-doctor.out || fail "make doctor failed, but not with pacslab doctor's exit code 4"

step "The venv runs on Debian's Python and every third-party import of the project works"
.venv/bin/python tests/fresh/check_imports.py || fail "imports (see above)"

step "pacslab doctor names the missing Docker engine with its fix, and exits 4"
set +e
.venv/bin/pacslab doctor >/tmp/doctor.out 2>&1
doctor_rc=$?
set -e
cat /tmp/doctor.out
[ "$doctor_rc" -eq 4 ] || fail "pacslab doctor exited $doctor_rc, not 4"
grep -qE '\[MISSING \] Docker engine +no engine answers at unix:///var/run/docker.sock' /tmp/doctor.out \
  || fail "doctor does not name the missing Docker engine"
grep -q "fix: pacslab up installs Debian's docker.io and starts dockerd itself (you are root)" /tmp/doctor.out \
  || fail "doctor does not give the engine's fix"
grep -qE '\[  ok    \] Python +3\.11\.' /tmp/doctor.out || fail "doctor does not report Debian's Python 3.11"
grep -qE '\[  ok    \] ansible-playbook +/root/pacslab/\.venv/bin/ansible-playbook' /tmp/doctor.out \
  || fail "doctor does not find the venv's ansible-playbook"

step "ansible-playbook --version from the venv"
.venv/bin/ansible-playbook --version | tee /tmp/ansible.out
core_pin=$(sed -n 's/^ansible-core==//p' requirements.txt)
grep -q "^ansible-playbook \[core ${core_pin}\]" /tmp/ansible.out || fail "ansible-playbook is not ansible-core ${core_pin}"
grep -qE "python version = 3\.11\.[0-9]+ .*\(/root/pacslab/\.venv/bin/python3?\)" /tmp/ansible.out \
  || fail "ansible-playbook does not run on the venv's Python"

step "fresh check passed"
