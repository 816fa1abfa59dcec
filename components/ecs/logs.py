"""CloudWatch Logs: one log group per workload with a retention, and each container's log driver.

Every line the app writes is one log event: no multiline pattern or datetime format that would join
JSON lines. The driver is non-blocking with a 25 MiB buffer: if CloudWatch Logs is slow, a burst of
lines can be dropped rather than stalling a worker's event loop (and its jobs and health) on stdout.
"""

from __future__ import annotations

from typing import Any

from killsafe.ecs import names
from killsafe.ecs.iam import region_of
from killsafe.ecs.requests import AwsRequest
from killsafe.spec import WorkloadSpec

LOG_GROUP = "log-group"
LOG_BUFFER = "25m"


def log_group_requests(spec: WorkloadSpec) -> list[AwsRequest]:
    name = names.log_group_name(spec)
    return [
        AwsRequest(LOG_GROUP, "logs", "CreateLogGroup", {"logGroupName": name, "tags": names.tags(spec, "logs")}),
        AwsRequest(
            f"{LOG_GROUP}-retention",
            "logs",
            "PutRetentionPolicy",
            {"logGroupName": name, "retentionInDays": spec.ecs.log_retention_days},
            amends=LOG_GROUP,
        ),
    ]


def log_configuration(spec: WorkloadSpec, stream_prefix: str) -> dict[str, Any]:
    return {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": names.log_group_name(spec),
            "awslogs-region": region_of(spec),
            "awslogs-stream-prefix": stream_prefix,
            "mode": "non-blocking",
            "max-buffer-size": LOG_BUFFER,
        },
    }
