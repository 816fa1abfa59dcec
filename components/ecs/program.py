"""What `pulumi up` deploys for a stack whose target is ecs (called by stacks/__main__.py).

The resources go to the AWS account of the ambient credentials (`aws configure`, `AWS_PROFILE`, ...)
and to `killsafe:workload.ecs.region`. pulumi-aws is the optional extra `killsafe[aws]`; without it
the program stops with the command that installs it.
"""

from __future__ import annotations

import pulumi

from killsafe.spec import StackConfig

try:
    from killsafe.ecs.component import EcsWorkload
except ModuleNotFoundError as err:  # pragma: no cover - exercised by tests/ecs/test_ecs_imports.py
    if err.name not in ("pulumi_aws", "pulumi_random"):
        raise
    raise pulumi.RunError(
        "target ecs needs the AWS extra: pip install 'killsafe[aws]' (in this repository: bash .ci/bootstrap)"
    ) from None


def deploy(stack: StackConfig) -> EcsWorkload:
    spec = stack.workload
    workload = EcsWorkload(spec.name, spec)
    pulumi.export("cluster_arn", workload.cluster_arn)
    pulumi.export("worker_service", workload.worker_service_name)
    pulumi.export("web_service", workload.web_service_name)
    pulumi.export("log_group", workload.log_group_name)
    pulumi.export("redis_secret_arn", workload.redis_secret_arn)
    pulumi.export("alarm_topic_arn", workload.alarm_topic_arn)
    pulumi.export("shutdown_budget", workload.shutdown_budget)
    return workload
