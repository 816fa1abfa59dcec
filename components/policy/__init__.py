"""The killsafe checklist as a Pulumi policy pack, for any stack (killsafe's components or not).

`resources.py` reads Pulumi resources (type token + input properties) into killsafe.lint's objects,
`policies.py` holds the policies as plain functions over (resource type, props) that run the lint
rules (one implementation for `killsafe lint` and the pack), and `pack.py` / `__main__.py` are the
pulumi-policy entry point, kept apart: constructing a PolicyPack starts a gRPC server and blocks.
"""
