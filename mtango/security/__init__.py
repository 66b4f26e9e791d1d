"""Who may do what, and the record of every write attempt (no HTTP in here but the request).

- ``passwords``: salted slow hashes (argon2id) and their checking;
- ``users``: the users file (users, their roles and tokens; roles with name rules);
- ``access``: the one place where a request's action (read or write) is allowed or refused;
- ``audit``: one JSON line per write attempt, accepted or refused.
"""
