"""CloudWatch alarms from the shared alert definitions, notifying an encrypted SNS topic.

The alarms come from `killsafe.observability.cloudwatch` (the definitions' conditions, thresholds and
windows, never retyped); this module only says where the series are on ECS:

- the contract metrics: the workers' EMF lines in the namespace `metrics_namespace(spec)`;
- the desired worker count (WorkerDown with autoscaling): Container Insights' DesiredTaskCount, when the
  cluster is created here with Container Insights on; otherwise WorkerDown compares with min_replicas;
- Redis (mode elasticache): ElastiCache's own DatabaseMemoryUsagePercentage and Evictions for every node.
  The maxmemory-policy half of RedisEvictionPolicyUnsafe has no metric: the parameter group sets
  noeviction and `killsafe check` (KS007) verifies it. An external Redis gets no Redis alarms (as on
  Kubernetes without an exporter).

WorkerRestarting and WorkerOOMKilled watch kube-state-metrics and have no ECS alarm: a crashing or
OOM-killed task is replaced by the service scheduler and shows as WorkerDown while it is missing, the
deployment circuit breaker stops a deploy whose tasks keep failing, and the stopped task's
`stoppedReason` (OutOfMemoryError) is in the service events.

The topic is encrypted with a customer-managed KMS key (rotated yearly): CloudWatch cannot publish to a
topic encrypted with the AWS-managed `alias/aws/sns` key, whose policy cannot grant it. The key policy
is AWS's default (the account administers the key through IAM) plus CloudWatch's right to encrypt
messages for this account's alarms. Subscribe your pager or chat to the topic (`alarm_topic_arn` output).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from killsafe.ecs import names
from killsafe.ecs.iam import POLICY_VERSION, cluster_name, partition, region_of
from killsafe.ecs.requests import ACCOUNT, AwsRequest, Json, Ref, Sub
from killsafe.observability.alerts import REDIS_CONFIG, REDIS_EVICTED, REDIS_MEMORY_USED
from killsafe.observability.cloudwatch import CloudWatchMetric, Skipped, Sources, cloudwatch_alarms
from killsafe.spec import WorkloadSpec

TOPIC = "alarm-topic"
TOPIC_KEY = "alarm-topic-key"
CONTAINER_INSIGHTS = "ECS/ContainerInsights"
ELASTICACHE = "AWS/ElastiCache"
CLOUDWATCH_PRINCIPAL = "cloudwatch.amazonaws.com"
TOPIC_KEY_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey"]
"""What SNS asks KMS for when CloudWatch publishes to an encrypted topic."""


def metrics_namespace(spec: WorkloadSpec) -> str:
    """The workers' EMF namespace (KILLSAFE_EMF_NAMESPACE), one per workload."""
    return f"killsafe/{spec.name}"


def cache_node_ids(spec: WorkloadSpec) -> list[str]:
    """ElastiCache names a replication group's nodes <group id>-001, -002, ..."""
    group = names.replication_group_id(spec)
    return [f"{group}-{index:03d}" for index in range(1, 2 + spec.ecs.elasticache.replicas)]


def sources(spec: WorkloadSpec) -> Sources:
    desired = None
    if spec.worker.autoscaling is not None and spec.ecs.cluster_arn is None and spec.ecs.container_insights:
        desired = CloudWatchMetric(
            CONTAINER_INSIGHTS,
            "DesiredTaskCount",
            {"ClusterName": cluster_name(spec), "ServiceName": names.service_name(spec, "worker")},
        )
    external: dict[str, tuple[CloudWatchMetric, ...] | None] = {REDIS_CONFIG: None}
    if spec.redis.mode == "elasticache":
        nodes = cache_node_ids(spec)
        external[REDIS_MEMORY_USED] = tuple(
            CloudWatchMetric(ELASTICACHE, "DatabaseMemoryUsagePercentage", {"CacheClusterId": n}, percent=True)
            for n in nodes
        )
        external[REDIS_EVICTED] = tuple(
            CloudWatchMetric(ELASTICACHE, "Evictions", {"CacheClusterId": n}) for n in nodes
        )
    return Sources(metrics_namespace(spec), desired, external)


def alarm_key(alarm_name: str, taken: set[str]) -> str:
    """A request key (lowercase letters, digits, dashes) for an alarm; a stable hash of the name keeps it
    unique when two names differ only in characters a key cannot hold (`a_b` and `a.b` queues)."""
    key = "alarm-" + re.sub(r"[^a-z0-9-]", "-", alarm_name.lower())
    if key in taken:
        key = f"{key}-{hashlib.sha256(alarm_name.encode()).hexdigest()[:4]}"
    taken.add(key)
    return key


def topic_key_policy(spec: WorkloadSpec) -> dict[str, Any]:
    region = region_of(spec)
    account = Ref(ACCOUNT, "account_id")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "AccountAdministersTheKeyThroughIam",
                "Effect": "Allow",
                "Principal": {"AWS": Sub(f"arn:{partition(region)}:iam::", account, ":root")},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "CloudWatchAlarmsOfThisAccountPublish",
                "Effect": "Allow",
                "Principal": {"Service": CLOUDWATCH_PRINCIPAL},
                "Action": TOPIC_KEY_ACTIONS,
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
        ],
    }


def topic_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    return [
        AwsRequest(
            TOPIC_KEY,
            "kms",
            "CreateKey",
            {
                "Description": f"Encrypts the alarm notifications of {spec.name} (killsafe)",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "Policy": Json(topic_key_policy(spec)),
                "Tags": [{"TagKey": k, "TagValue": v} for k, v in names.tags(spec, "alarms").items()],
            },
        ),
        AwsRequest(
            f"{TOPIC_KEY}-rotation", "kms", "EnableKeyRotation", {"KeyId": Ref(TOPIC_KEY, "key_id")}, amends=TOPIC_KEY
        ),
        AwsRequest(
            TOPIC,
            "sns",
            "CreateTopic",
            {
                "Name": f"{spec.name}-alarms",
                "Attributes": {"KmsMasterKeyId": Ref(TOPIC_KEY, "arn")},
                "Tags": names.key_value_tags(spec, "alarms"),
            },
        ),
    ]


def alarms(spec: WorkloadSpec) -> tuple[list[dict[str, Any]], list[Skipped]]:
    return cloudwatch_alarms(spec, sources(spec), [Ref(TOPIC, "arn")], redis=spec.redis.mode == "elasticache")


def alarm_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    """The topic and one PutMetricAlarm per alert (and group); nothing when alerts are disabled."""
    made, _ = alarms(spec)
    if not made:
        return []
    requests = topic_requests(spec)
    taken: set[str] = set()
    for params in made:
        requests.append(AwsRequest(alarm_key(params["AlarmName"], taken), "cloudwatch", "PutMetricAlarm", params))
    return requests
