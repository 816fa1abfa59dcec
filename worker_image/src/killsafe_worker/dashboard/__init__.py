"""`killsafe-dashboard`: the internal job page behind auth (failed jobs, audited retries), its own process.

It never shares a port or a process with `killsafe-web`: the public web tier cannot serve it, and a
deployment exposes it only on its own internal port (contract.DASHBOARD_PORT).
"""
