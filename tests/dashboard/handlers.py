"""Handlers for the dashboard tests: jobs that fail while an outage flag is set in Redis, then succeed.

"Fix the cause, then retry" is what an operator does during an incident: the tests set
OUTAGE_KEY, let the jobs fail for good, delete the key (the fix) and retry from the dashboard or Bull
Board, and the reference worker then completes them.
"""

from __future__ import annotations

from typing import Any

from killsafe_worker.handlers import DEFAULT_HANDLERS, HandlerRegistry, JobContext

OUTAGE_KEY = "killsafe-test:outage"


class SmtpUnavailable(ConnectionError):
    """What a mail relay answers during an outage."""


class PaymentProviderTimeout(TimeoutError):
    """What a payment provider does during an outage."""


async def send_email(ctx: JobContext) -> dict[str, Any]:
    if await ctx.redis.exists(OUTAGE_KEY):
        raise SmtpUnavailable("SMTP 421 mail.example.invalid: service not available, closing transmission channel")
    return {"sent": True, "firstRun": await ctx.record_side_effect()}


async def charge(ctx: JobContext) -> dict[str, Any]:
    if await ctx.redis.exists(OUTAGE_KEY):
        raise PaymentProviderTimeout("payment provider did not answer within 10 s (charge state unknown)")
    return {"charged": True, "firstRun": await ctx.record_side_effect()}


REGISTRY: HandlerRegistry = {**DEFAULT_HANDLERS, "send_email": send_email, "charge": charge}
