"""Pure ECS Fargate builder: `WorkloadSpec` in, botocore-shaped AWS requests out (no I/O, no Pulumi, no SDK).

The same list feeds the Pulumi component (`component.py`) and `killsafe render`. One file per concept:

    requests.py       AwsRequest, Ref/Sub/Json (values AWS assigns), wire form and resolution
    names.py          every AWS name and the tags;  fargate.py  the task size table and helper
    logs.py           log group + retention, the awslogs driver;  health.py  health check timings
    network.py        security groups and their rules (closed by default)
    redis.py          ElastiCache (parameter group, replication group, URL secret) or an external secret
    iam.py            execution role and task roles, least privilege
    load_balancer.py  target group + listener rule for the web tier
    tasks.py          task definitions;  services.py  cluster and services

Requests come out in dependency order (every ref points at an earlier request, the pseudo-request
`aws` or a generated value), so applying the rendered files in order works.

    dashboard.py      the job dashboard's task definition, service and ingress (dashboard.enabled)
    alarms.py         CloudWatch alarms from the shared alert definitions, their encrypted SNS topic
    scaling.py        Application Auto Scaling for `worker.autoscaling` (target tracking, backlog per task)

The component creates the alarms and the scaling target and policy in stages after the services.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from killsafe.ecs import dashboard, redis
from killsafe.ecs.alarms import alarm_requests
from killsafe.ecs.iam import iam_requests
from killsafe.ecs.load_balancer import load_balancer_requests
from killsafe.ecs.logs import LOG_GROUP, log_group_requests
from killsafe.ecs.network import network_requests
from killsafe.ecs.requests import ACCOUNT, AwsRequest, Ref
from killsafe.ecs.scaling import scaling_requests
from killsafe.ecs.services import cluster_request, service_request
from killsafe.ecs.tasks import web_task_definition, worker_task_definition
from killsafe.spec import WorkloadSpec

GENERATED: dict[str, str] = {redis.AUTH_TOKEN: "result"}
"""Values the component generates itself (key -> attribute), not AWS requests."""
PSEUDO: dict[str, str] = {ACCOUNT: "account_id"}
"""Values of the deploying account, known to the engine (key -> attribute)."""


def build_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    """Every AWS request of the workload, in dependency order. Deterministic for a given spec."""
    requests: list[AwsRequest] = []
    if spec.ecs.cluster_arn is None:
        requests.append(cluster_request(spec))
    requests += log_group_requests(spec)
    requests += network_requests(spec)
    if spec.redis.mode == "elasticache":
        requests += redis.elasticache_requests(spec)
    credentials = dashboard.credentials_arn(spec) if spec.dashboard.enabled else None
    requests += iam_requests(spec, Ref(LOG_GROUP, "arn"), redis.redis_secret_arn(spec), credentials)
    lb = spec.ecs.load_balancer
    if spec.web is not None and lb is not None:
        requests += load_balancer_requests(spec, lb)
    if spec.dashboard.enabled:
        requests += dashboard.ingress_requests(spec)
    if spec.web is not None:
        requests.append(web_task_definition(spec))
    requests.append(worker_task_definition(spec))
    if spec.dashboard.enabled:
        requests += dashboard.dashboard_requests(spec)
    if spec.web is not None:
        requests.append(service_request(spec, "web", spec.web.replicas, port=spec.web.port if lb else None))
    requests.append(worker_service(spec))
    if spec.dashboard.enabled:
        requests.append(dashboard.dashboard_service(spec))
    requests += alarm_requests(spec)
    if spec.worker.autoscaling is not None:
        requests += scaling_requests(spec)
    return requests


def worker_service(spec: WorkloadSpec) -> AwsRequest:
    """With autoscaling the service starts at min_replicas and Application Auto Scaling owns the count."""
    autoscaling = spec.worker.autoscaling
    if autoscaling is None:
        return service_request(spec, "worker", spec.worker.replicas)
    service = service_request(spec, "worker", autoscaling.min_replicas)
    return replace(service, managed_elsewhere=("desiredCount",))


def wire_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    """The requests as rendered: refs as `${key.attribute}` text (what `killsafe check` inspects)."""
    return [request.wire() for request in build_requests(spec)]


def prerequisites(spec: WorkloadSpec) -> list[str]:
    """What applying the rendered request files by hand takes (under Pulumi: nothing)."""
    steps = [
        "The files are botocore/AWS CLI inputs in dependency order (aws <service> <operation> --cli-input-json "
        "file://...); replace each ${key.attribute} with the value AWS returned for the earlier request of that "
        "key (${aws.account_id}: your account id). `pulumi up` does all of it for you."
    ]
    if spec.redis.mode == "elasticache":
        steps.append(
            "Generate the ElastiCache AUTH token once for ${redis-auth-token.result}, e.g. "
            "REDIS_AUTH_TOKEN=$(openssl rand -hex 32), and keep it out of files and shell history."
        )
    else:
        assert spec.redis.url_secret is not None
        steps.append(
            f"The secret {shlex.quote(spec.redis.url_secret.name)} must exist and hold JSON with key "
            f"{shlex.quote(spec.redis.url_secret.key)} = the Redis URL (rediss://...)."
        )
    return steps
