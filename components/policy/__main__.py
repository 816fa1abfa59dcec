"""`pulumi preview --policy-pack components/policy` runs this: the killsafe policy pack."""

from killsafe.policy.pack import serve

serve()
