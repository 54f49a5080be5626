"""On the directory, as an administrator would after the incident: each person of args.people gets
their lock removed (pwdAccountLockedTime deleted as the manager, over ldapi:///), then one bind
with their own password over LDAPS, which clears the failures the policy counted (pwdFailureTime).
Result: who was unlocked, and each bind's outcome."""

import json
import subprocess

import ldap

args, passwords = CONTEXT["args"], CONTEXT["passwords"]  # noqa: F821 (given by the scenario runner)
suffix = f"dc={CONTEXT['lab']},dc=pacslab"  # noqa: F821
ldap.set_option(ldap.OPT_X_TLS_CACERTFILE, "/etc/pacslab/tls/root.pem")
ldap.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
directory = next(h for _, h in sorted(CONTEXT["hosts"].items()) if "directories" in h["groups"] and h["deployed"])  # noqa: F821
uri = f"ldaps://{directory['address']}:{directory['services']['ldaps']}"
unlocked, binds = [], {}
for name in args["people"]:
    dn = f"uid={name},ou=people,{suffix}"
    change = f"dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n-\n"
    proc = subprocess.run(["ldapmodify", "-Q", "-Y", "EXTERNAL", "-H", "ldapi:///"], input=change, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        unlocked.append(name)
    con = ldap.initialize(uri)
    try:
        con.simple_bind_s(dn, passwords[name])
        binds[name] = "success"
        con.unbind_s()
    except ldap.LDAPError as exc:
        binds[name] = type(exc).__name__
print(json.dumps({"unlocked": unlocked, "binds": binds}))
