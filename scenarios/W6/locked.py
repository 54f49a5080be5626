"""On the directory: whether each person of args.people is locked by the password policy (their
entry holds pwdAccountLockedTime, which OpenLDAP's ppolicy overlay sets after pwdMaxFailure wrong
passwords), read as the directory's manager (the local root over ldapi:///, SASL EXTERNAL)."""

import json
import subprocess

args = CONTEXT["args"]  # noqa: F821 (given by the scenario runner)
suffix = f"dc={CONTEXT['lab']},dc=pacslab"  # noqa: F821
locked = {}
for name in args["people"]:
    out = subprocess.run(["ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", "ldapi:///", "-b", f"uid={name},ou=people,{suffix}",
                          "-s", "base", "(objectClass=*)", "pwdAccountLockedTime"], capture_output=True, text=True, check=False).stdout
    locked[name] = any(line.startswith("pwdAccountLockedTime:") for line in out.splitlines())
print(json.dumps({"locked": sorted(n for n, v in locked.items() if v), "unlocked": sorted(n for n, v in locked.items() if not v)}))
