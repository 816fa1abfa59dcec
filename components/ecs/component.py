"""`EcsWorkload`: the Pulumi component that turns the pure builder's AWS requests into pulumi-aws resources.

Thin on purpose (the pulumi-awsx style): every decision about *what* to deploy lives in
`killsafe.ecs.build`, tested without Pulumi. This component only

- maps each request to its pulumi-aws resource, field by field (`TRANSLATIONS`). A translation must
  consume every field of its request (and of the requests that amend it, such as PutRetentionPolicy
  for CreateLogGroup): a field the builder adds but nobody maps fails loudly instead of vanishing;
  tests/ecs/test_ecs_parity.py maps the created inputs back and compares them with the requests;
- resolves refs to the outputs of the children it created (`${worker-task-role.arn}` -> the role's
  `arn`), the deploying account (`aws.get_caller_identity`) and the values it generates itself: the
  ElastiCache AUTH token, a `RandomPassword` kept secret in the Pulumi state;
- orders the children: the services start only once everything their tasks use exists (roles and
  policies, security group rules, the Redis URL secret). Later stages (alarms, autoscaling) go after
  the services (see `Stage`).

Every child is parented to the component (so a provider passed in `opts` reaches it), named
`<component name>-<request key>` and placed in `spec.ecs.region` explicitly, so the log driver's
region and the resources' region cannot disagree.
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random

from killsafe.budget import budget_summary
from killsafe.config import parse_stack_config
from killsafe.ecs import build
from killsafe.ecs.alarms import TOPIC
from killsafe.ecs.network import DEFAULT_EGRESS
from killsafe.ecs.redis import AUTH_TOKEN, AUTH_TOKEN_LENGTH, redis_secret_arn
from killsafe.ecs.requests import ACCOUNT, AwsRequest, Json, Ref, Sub, encode_json
from killsafe.ecs.services import CLUSTER
from killsafe.spec import WorkloadSpec

TYPE_TOKEN = "killsafe:ecs:Workload"


class Stage(enum.IntEnum):
    """Creation order: every child depends on all children of the earlier stages."""

    SETUP = 0
    """Cluster, logs, network, Redis, IAM, load balancer, task definitions."""
    SERVICES = 1
    """The services: their tasks start only when everything above exists."""
    ALARMS = 2
    """The alarm topic's KMS key, the topic, the CloudWatch alarms."""
    SCALING = 3
    """The worker service's scalable target (the service must exist)."""
    SCALING_POLICY = 4
    """Its target-tracking policy (the scalable target must exist)."""


class UnmappedFields(ValueError):
    """A request field no translation consumed (a builder change the component does not know)."""


@dataclass
class Fields:
    """A request's params, handed out one field at a time; `done()` fails on any field left over."""

    where: str
    params: dict[str, Any]
    inputs: Callable[[Any], Any]
    taken: set[str] = field(default_factory=set)
    children: list[Fields] = field(default_factory=list)

    def __call__(self, name: str) -> Any:
        """The field as a Pulumi input (refs resolved), or None when absent."""
        self.taken.add(name)
        return self.inputs(self.params[name]) if name in self.params else None

    def raw(self, name: str) -> Any:
        self.taken.add(name)
        return self.params.get(name)

    def sub(self, name: str) -> Fields:
        """A nested object, itself fully consumed."""
        self.taken.add(name)
        child = Fields(f"{self.where}.{name}", dict(self.params.get(name) or {}), self.inputs)
        self.children.append(child)
        return child

    def items(self, name: str) -> list[Fields]:
        """A list of nested objects, each fully consumed."""
        self.taken.add(name)
        found = [
            Fields(f"{self.where}.{name}[{i}]", dict(item), self.inputs)
            for i, item in enumerate(self.params.get(name) or [])
        ]
        self.children.extend(found)
        return found

    def done(self) -> None:
        left = sorted(set(self.params) - self.taken)
        if left:
            raise UnmappedFields(f"{self.where}: field(s) {', '.join(left)} have no pulumi-aws input")
        for child in self.children:
            child.done()


def _tags(pairs: list[dict[str, str]] | None) -> dict[str, str] | None:
    """[{Key, Value}] or [{key, value}] as the map pulumi-aws takes."""
    if pairs is None:
        return None
    return {p.get("Key", p.get("key", "")): p.get("Value", p.get("value", "")) for p in pairs}


Args = dict[str, Any]
Translate = Callable[[Fields, list[Fields]], tuple[type[pulumi.CustomResource], Args]]


def _cluster(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    settings = [{"name": s("name"), "value": s("value")} for s in f.items("settings")]
    return aws.ecs.Cluster, {"name": f("clusterName"), "settings": settings, "tags": _tags(f.raw("tags"))}


def _log_group(f: Fields, amends: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args: Args = {"name": f("logGroupName"), "tags": f("tags")}
    for retention in amends:
        retention.raw("logGroupName")
        args["retention_in_days"] = retention("retentionInDays")
    return aws.cloudwatch.LogGroup, args


def _security_group(f: Fields, amends: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    (spec,) = f.items("TagSpecifications")
    spec.raw("ResourceType")
    for revoke in amends:  # the provider removes AWS's default allow-all egress rule on create
        revoke.raw("GroupId")
        if revoke.raw("IpPermissions") != [DEFAULT_EGRESS]:
            raise UnmappedFields(f"{revoke.where}: only the default egress rule is revoked by the provider")
    args = {
        "name": f("GroupName"),
        "description": f("Description"),
        "vpc_id": f("VpcId"),
        "tags": _tags(spec.raw("Tags")),
    }
    return aws.ec2.SecurityGroup, args


def _rule(resource: type[pulumi.CustomResource]) -> Translate:
    def translate(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
        (permission,) = f.items("IpPermissions")
        args: Args = {
            "security_group_id": f("GroupId"),
            "ip_protocol": permission("IpProtocol"),
            "from_port": permission("FromPort"),
            "to_port": permission("ToPort"),
        }
        for peers, peer_field, arg in (
            ("UserIdGroupPairs", "GroupId", "referenced_security_group_id"),
            ("IpRanges", "CidrIp", "cidr_ipv4"),
            ("Ipv6Ranges", "CidrIpv6", "cidr_ipv6"),
        ):
            for peer in permission.items(peers):
                args[arg] = peer(peer_field)
                args["description"] = peer("Description")
        return resource, args

    return translate


def _role(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args = {
        "name": f("RoleName"),
        "assume_role_policy": f("AssumeRolePolicyDocument"),
        "description": f("Description"),
        "max_session_duration": f("MaxSessionDuration"),
        "tags": _tags(f.raw("Tags")),
    }
    return aws.iam.Role, args


def _role_policy(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    return aws.iam.RolePolicy, {"role": f("RoleName"), "name": f("PolicyName"), "policy": f("PolicyDocument")}


def _subnet_group(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args = {
        "name": f("CacheSubnetGroupName"),
        "description": f("CacheSubnetGroupDescription"),
        "subnet_ids": f("SubnetIds"),
        "tags": _tags(f.raw("Tags")),
    }
    return aws.elasticache.SubnetGroup, args


def _parameter_group(f: Fields, amends: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    parameters = []
    for values in amends:
        values.raw("CacheParameterGroupName")
        parameters += [
            {"name": p("ParameterName"), "value": p("ParameterValue")} for p in values.items("ParameterNameValues")
        ]
    args = {
        "name": f("CacheParameterGroupName"),
        "family": f("CacheParameterGroupFamily"),
        "description": f("Description"),
        "parameters": parameters,
        "tags": _tags(f.raw("Tags")),
    }
    return aws.elasticache.ParameterGroup, args


REPLICATION_GROUP_ARGS = {
    "ReplicationGroupId": "replication_group_id",
    "ReplicationGroupDescription": "description",
    "Engine": "engine",
    "EngineVersion": "engine_version",
    "CacheNodeType": "node_type",
    "ClusterMode": "cluster_mode",
    "NumCacheClusters": "num_cache_clusters",
    "AutomaticFailoverEnabled": "automatic_failover_enabled",
    "MultiAZEnabled": "multi_az_enabled",
    "CacheParameterGroupName": "parameter_group_name",
    "CacheSubnetGroupName": "subnet_group_name",
    "SecurityGroupIds": "security_group_ids",
    "Port": "port",
    "TransitEncryptionEnabled": "transit_encryption_enabled",
    "AtRestEncryptionEnabled": "at_rest_encryption_enabled",
    "AuthToken": "auth_token",
    "AutoMinorVersionUpgrade": "auto_minor_version_upgrade",
    "SnapshotRetentionLimit": "snapshot_retention_limit",
}


def _replication_group(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args: Args = {arg: f(param) for param, arg in REPLICATION_GROUP_ARGS.items() if param in f.params}
    args["tags"] = _tags(f.raw("Tags"))
    return aws.elasticache.ReplicationGroup, args


def _secret(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args = {
        "name": f("Name"),
        "description": f("Description"),
        "kms_key_id": f("KmsKeyId"),
        "tags": _tags(f.raw("Tags")),
    }
    return aws.secretsmanager.Secret, args


def _secret_version(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    return aws.secretsmanager.SecretVersion, {"secret_id": f("SecretId"), "secret_string": f("SecretString")}


def _target_group(f: Fields, amends: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    matcher = f.sub("Matcher")
    args: Args = {
        "name": f("Name"),
        "protocol": f("Protocol"),
        "protocol_version": f("ProtocolVersion"),
        "port": f("Port"),
        "vpc_id": f("VpcId"),
        "target_type": f("TargetType"),
        "ip_address_type": f("IpAddressType"),
        "health_check": {
            "enabled": f("HealthCheckEnabled"),
            "protocol": f("HealthCheckProtocol"),
            "port": f("HealthCheckPort"),
            "path": f("HealthCheckPath"),
            "interval": f("HealthCheckIntervalSeconds"),
            "timeout": f("HealthCheckTimeoutSeconds"),
            "healthy_threshold": f("HealthyThresholdCount"),
            "unhealthy_threshold": f("UnhealthyThresholdCount"),
            "matcher": matcher("HttpCode"),
        },
        "tags": _tags(f.raw("Tags")),
    }
    for attributes in amends:
        attributes.raw("TargetGroupArn")
        for attribute in attributes.items("Attributes"):
            if attribute.raw("Key") != "deregistration_delay.timeout_seconds":
                raise UnmappedFields(
                    f"{attribute.where}: no pulumi-aws input for target group attribute {attribute.params}"
                )
            args["deregistration_delay"] = attribute("Value")
    return aws.lb.TargetGroup, args


CONDITION_FIELDS = {
    "path-pattern": ("PathPatternConfig", "path_pattern"),
    "host-header": ("HostHeaderConfig", "host_header"),
}


def _listener_rule(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    conditions = []
    for condition in f.items("Conditions"):
        config, arg = CONDITION_FIELDS[condition.raw("Field")]
        conditions.append({arg: {"values": condition.sub(config)("Values")}})
    actions = [{"type": a("Type"), "target_group_arn": a("TargetGroupArn")} for a in f.items("Actions")]
    args = {
        "listener_arn": f("ListenerArn"),
        "priority": f("Priority"),
        "conditions": conditions,
        "actions": actions,
        "tags": _tags(f.raw("Tags")),
    }
    return aws.lb.ListenerRule, args


def _task_definition(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    platform = f.sub("runtimePlatform")
    args = {
        "family": f("family"),
        "task_role_arn": f("taskRoleArn"),
        "execution_role_arn": f("executionRoleArn"),
        "network_mode": f("networkMode"),
        "requires_compatibilities": f("requiresCompatibilities"),
        "cpu": f("cpu"),
        "memory": f("memory"),
        "runtime_platform": {
            "operating_system_family": platform("operatingSystemFamily"),
            "cpu_architecture": platform("cpuArchitecture"),
        },
        # botocore's containerDefinitions, exactly, as the JSON text the provider takes
        "container_definitions": f.inputs(Json(f.raw("containerDefinitions"))),
        "volumes": [{"name": v("name")} for v in f.items("volumes")],
        "tags": _tags(f.raw("tags")),
    }
    return aws.ecs.TaskDefinition, args


def _service(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    vpc = f.sub("networkConfiguration").sub("awsvpcConfiguration")
    deployment = f.sub("deploymentConfiguration")
    breaker = deployment.sub("deploymentCircuitBreaker")
    args: Args = {
        "cluster": f("cluster"),
        "name": f("serviceName"),
        "task_definition": f("taskDefinition"),
        "desired_count": f("desiredCount"),
        "launch_type": f("launchType"),
        "platform_version": f("platformVersion"),
        "network_configuration": {
            "subnets": vpc("subnets"),
            "security_groups": vpc("securityGroups"),
            "assign_public_ip": vpc.raw("assignPublicIp") == "ENABLED",
        },
        "deployment_circuit_breaker": {"enable": breaker("enable"), "rollback": breaker("rollback")},
        "deployment_maximum_percent": deployment("maximumPercent"),
        "deployment_minimum_healthy_percent": deployment("minimumHealthyPercent"),
        "deployment_controller": {"type": f.sub("deploymentController")("type")},
        "scheduling_strategy": f("schedulingStrategy"),
        "enable_ecs_managed_tags": f("enableECSManagedTags"),
        "propagate_tags": f("propagateTags"),
        "enable_execute_command": f("enableExecuteCommand"),
        "tags": _tags(f.raw("tags")),
    }
    balancers = [
        {
            "target_group_arn": lb("targetGroupArn"),
            "container_name": lb("containerName"),
            "container_port": lb("containerPort"),
        }
        for lb in f.items("loadBalancers")
    ]
    if balancers:
        args["load_balancers"] = balancers
        args["health_check_grace_period_seconds"] = f("healthCheckGracePeriodSeconds")
    return aws.ecs.Service, args


def _kms_key(f: Fields, amends: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args: Args = {
        "description": f("Description"),
        "key_usage": f("KeyUsage"),
        "customer_master_key_spec": f("KeySpec"),
        "policy": f("Policy"),
        "tags": {t("TagKey"): t("TagValue") for t in f.items("Tags")},
    }
    for rotation in amends:
        rotation.raw("KeyId")
        args["enable_key_rotation"] = True
    return aws.kms.Key, args


def _topic(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    attributes = f.sub("Attributes")
    args = {"name": f("Name"), "kms_master_key_id": attributes("KmsMasterKeyId"), "tags": _tags(f.raw("Tags"))}
    return aws.sns.Topic, args


def _dimension_map(items: list[Fields]) -> dict[str, Any]:
    return {d.raw("Name"): d("Value") for d in items}


def _alarm(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    queries = []
    for query in f.items("Metrics"):
        entry: Args = {"id": query("Id"), "return_data": query("ReturnData"), "label": query("Label")}
        if "Expression" in query.params:
            entry["expression"] = query("Expression")
        else:
            stat = query.sub("MetricStat")
            metric = stat.sub("Metric")
            entry["metric"] = {
                "namespace": metric("Namespace"),
                "metric_name": metric("MetricName"),
                "dimensions": _dimension_map(metric.items("Dimensions")),
                "period": stat("Period"),
                "stat": stat("Stat"),
            }
        queries.append({k: v for k, v in entry.items() if v is not None})
    args: Args = {
        "name": f("AlarmName"),
        "alarm_description": f("AlarmDescription"),
        "actions_enabled": f("ActionsEnabled"),
        "alarm_actions": f("AlarmActions"),
        "ok_actions": f("OKActions"),
        "metric_queries": queries,
        "evaluation_periods": f("EvaluationPeriods"),
        "datapoints_to_alarm": f("DatapointsToAlarm"),
        "threshold": f("Threshold"),
        "comparison_operator": f("ComparisonOperator"),
        "treat_missing_data": f("TreatMissingData"),
        "tags": _tags(f.raw("Tags")),
    }
    return aws.cloudwatch.MetricAlarm, args


def _scalable_target(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    args = {
        "service_namespace": f("ServiceNamespace"),
        "resource_id": f("ResourceId"),
        "scalable_dimension": f("ScalableDimension"),
        "min_capacity": f("MinCapacity"),
        "max_capacity": f("MaxCapacity"),
        "tags": f("Tags"),
    }
    return aws.appautoscaling.Target, args


def _scaling_policy(f: Fields, _: list[Fields]) -> tuple[type[pulumi.CustomResource], Args]:
    config = f.sub("TargetTrackingScalingPolicyConfiguration")
    metrics = []
    for query in config.sub("CustomizedMetricSpecification").items("Metrics"):
        entry: Args = {"id": query("Id"), "return_data": query("ReturnData"), "label": query("Label")}
        if "Expression" in query.params:
            entry["expression"] = query("Expression")
        else:
            stat = query.sub("MetricStat")
            metric = stat.sub("Metric")
            entry["metric_stat"] = {
                "metric": {
                    "namespace": metric("Namespace"),
                    "metric_name": metric("MetricName"),
                    "dimensions": [{"name": d("Name"), "value": d("Value")} for d in metric.items("Dimensions")],
                },
                "stat": stat("Stat"),
            }
        metrics.append({k: v for k, v in entry.items() if v is not None})
    args = {
        "name": f("PolicyName"),
        "service_namespace": f("ServiceNamespace"),
        "resource_id": f("ResourceId"),
        "scalable_dimension": f("ScalableDimension"),
        "policy_type": f("PolicyType"),
        "target_tracking_scaling_policy_configuration": {
            "target_value": config("TargetValue"),
            "customized_metric_specification": {"metrics": metrics},
            "scale_out_cooldown": config("ScaleOutCooldown"),
            "scale_in_cooldown": config("ScaleInCooldown"),
            "disable_scale_in": config("DisableScaleIn"),
        },
    }
    return aws.appautoscaling.Policy, args


@dataclass(frozen=True)
class Translation:
    translate: Translate
    stage: Stage = Stage.SETUP

    def owned_args(self, request: AwsRequest) -> list[str]:
        """The resource inputs another request owns after creation (pulumi-aws names)."""
        return [MANAGED_ARGS[param] for param in request.managed_elsewhere]


MANAGED_ARGS = {"desiredCount": "desired_count"}
"""Request params that may be managed elsewhere -> the resource input Pulumi then ignores changes to."""
_CAMEL = re.compile(r"_([a-z])")


TRANSLATIONS: dict[tuple[str, str], Translation] = {
    ("ecs", "CreateCluster"): Translation(_cluster),
    ("logs", "CreateLogGroup"): Translation(_log_group),
    ("ec2", "CreateSecurityGroup"): Translation(_security_group),
    ("ec2", "AuthorizeSecurityGroupIngress"): Translation(_rule(aws.vpc.SecurityGroupIngressRule)),
    ("ec2", "AuthorizeSecurityGroupEgress"): Translation(_rule(aws.vpc.SecurityGroupEgressRule)),
    ("iam", "CreateRole"): Translation(_role),
    ("iam", "PutRolePolicy"): Translation(_role_policy),
    ("elasticache", "CreateCacheSubnetGroup"): Translation(_subnet_group),
    ("elasticache", "CreateCacheParameterGroup"): Translation(_parameter_group),
    ("elasticache", "CreateReplicationGroup"): Translation(_replication_group),
    ("secretsmanager", "CreateSecret"): Translation(_secret),
    ("secretsmanager", "PutSecretValue"): Translation(_secret_version),
    ("elbv2", "CreateTargetGroup"): Translation(_target_group),
    ("elbv2", "CreateRule"): Translation(_listener_rule),
    ("ecs", "RegisterTaskDefinition"): Translation(_task_definition),
    ("ecs", "CreateService"): Translation(_service, Stage.SERVICES),
    ("kms", "CreateKey"): Translation(_kms_key, Stage.ALARMS),
    ("sns", "CreateTopic"): Translation(_topic, Stage.ALARMS),
    ("cloudwatch", "PutMetricAlarm"): Translation(_alarm, Stage.ALARMS),
    ("application-autoscaling", "RegisterScalableTarget"): Translation(_scalable_target, Stage.SCALING),
    ("application-autoscaling", "PutScalingPolicy"): Translation(_scaling_policy, Stage.SCALING_POLICY),
}
"""(service, operation) -> the pulumi-aws resource it becomes. Amending requests fold into their target's."""


SECRET_ARGS = {"AuthToken": "auth_token", "SecretString": "secret_string"}
"""Request params that carry a secret -> the resource input marked secret (kept encrypted in state)."""


def translation(request: AwsRequest) -> Translation:
    found = TRANSLATIONS.get((request.service, request.operation))
    if found is None:
        known = ", ".join(f"{s}.{o}" for s, o in TRANSLATIONS)
        raise ValueError(
            f"no pulumi-aws resource for {request.service}.{request.operation} (request {request.key!r}); "
            f"known: {known}. Add it to killsafe.ecs.component.TRANSLATIONS"
        )
    return found


def _regional(resource_class: type[pulumi.CustomResource]) -> bool:
    """pulumi-aws 7 takes a per-resource `region` on everything but global services (IAM)."""
    return "region" in inspect.signature(resource_class._internal_init).parameters  # type: ignore[attr-defined]


def validated(spec: WorkloadSpec) -> WorkloadSpec:
    """The spec, checked as a target-ecs stack (region, subnets, Fargate sizes...): the same errors as the CLI."""
    raw = {"target": "ecs", "workload": spec.model_dump(exclude_unset=True)}
    return parse_stack_config(raw, f"EcsWorkload({spec.name!r})").workload


class EcsWorkload(pulumi.ComponentResource):
    """A killsafe workload on ECS Fargate: every request `build_requests(spec)` describes, as children.

    Opt-outs live in the spec: `ecs.cluster_arn` (no cluster created), `ecs.load_balancer` omitted (no
    target group or listener rule), `web` omitted (worker only), redis mode `external` (no ElastiCache,
    no generated token or secret), `ecs.container_insights: false`, `alerts.enabled: false` (no alarms,
    topic or key), `worker.autoscaling` omitted (no scaling), `dashboard.enabled` false (the default).
    """

    cluster_arn: pulumi.Output[str]
    worker_service_name: pulumi.Output[str]
    web_service_name: pulumi.Output[str | None]
    log_group_name: pulumi.Output[str]
    redis_secret_arn: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str | None]
    """The SNS topic the alarms notify (subscribe your pager or chat to it); None with alerts disabled."""
    shutdown_budget: dict[str, Any]
    resources: dict[str, pulumi.CustomResource]
    """Every AWS child (and the generated token), by request key."""

    def __init__(self, name: str, spec: WorkloadSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        spec = validated(spec)
        requests = build.build_requests(spec)
        amendments: dict[str, list[AwsRequest]] = {}
        primaries: list[tuple[AwsRequest, Translation]] = []
        for request in requests:  # fail before registering anything
            if request.amends is not None:
                amendments.setdefault(request.amends, []).append(request)
            else:
                primaries.append((request, translation(request)))
        self._region = spec.ecs.region
        self._account: pulumi.Output[str] | None = None
        self.resources = {}
        if spec.redis.mode == "elasticache":
            self.resources[AUTH_TOKEN] = pulumi_random.RandomPassword(
                f"{name}-{AUTH_TOKEN}",
                length=AUTH_TOKEN_LENGTH,
                special=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
        created: dict[Stage, list[pulumi.Resource]] = {stage: [] for stage in Stage}
        for stage in Stage:
            earlier = [resource for before in Stage if before < stage for resource in created[before]]
            for request, found in primaries:
                if found.stage == stage:
                    resource = self._create(name, request, found, amendments.get(request.key, []), earlier)
                    created[stage].append(resource)

        self.cluster_arn = (
            self._output(Ref(CLUSTER, "arn"))
            if CLUSTER in self.resources
            else pulumi.Output.from_input(spec.ecs.cluster_arn or "")
        )
        self.worker_service_name = self._output(Ref("worker-service", "name"))
        self.web_service_name = (
            self._output(Ref("web-service", "name")) if spec.web is not None else pulumi.Output.from_input(None)
        )
        self.log_group_name = self._output(Ref("log-group", "name"))
        secret = redis_secret_arn(spec)
        self.redis_secret_arn = self._output(secret) if isinstance(secret, Ref) else pulumi.Output.from_input(secret)
        self.alarm_topic_arn = (
            self._output(Ref(TOPIC, "arn")) if TOPIC in self.resources else pulumi.Output.from_input(None)
        )
        self.shutdown_budget = budget_summary(spec)
        self.register_outputs(
            {
                "cluster_arn": self.cluster_arn,
                "worker_service_name": self.worker_service_name,
                "web_service_name": self.web_service_name,
                "log_group_name": self.log_group_name,
                "redis_secret_arn": self.redis_secret_arn,
                "alarm_topic_arn": self.alarm_topic_arn,
                "shutdown_budget": self.shutdown_budget,
            }
        )

    def _output(self, ref: Ref) -> pulumi.Output[Any]:
        if ref.key == ACCOUNT:
            if self._account is None:
                identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
                self._account = identity.account_id
            return self._account
        resource = self.resources.get(ref.key)
        if resource is None:
            raise ValueError(f"ref {ref.text()} points at no earlier request or generated value")
        return pulumi.Output.from_input(getattr(resource, ref.attribute))

    def _inputs(self, value: Any) -> Any:
        """A request value as a Pulumi input: refs become outputs, Json becomes its text."""
        if isinstance(value, Ref):
            return self._output(value)
        if isinstance(value, Sub):
            return pulumi.Output.concat(*(self._inputs(part) for part in value.parts))
        if isinstance(value, Json):
            return pulumi.Output.from_input(self._inputs(value.document)).apply(encode_json)
        if isinstance(value, dict):
            return {k: self._inputs(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._inputs(v) for v in value]
        return value

    def _create(
        self,
        name: str,
        request: AwsRequest,
        found: Translation,
        amendments: list[AwsRequest],
        depends_on: list[pulumi.Resource],
    ) -> pulumi.CustomResource:
        fields = Fields(f"{request.service}.{request.operation} {request.key}", request.params, self._inputs)
        amending = [Fields(f"{a.service}.{a.operation} {a.key}", a.params, self._inputs) for a in amendments]
        resource_class, args = found.translate(fields, amending)
        for checked in (fields, *amending):
            checked.done()
        for secret in request.secret_params:
            arg = SECRET_ARGS[secret]
            args[arg] = pulumi.Output.secret(args[arg])
        if _regional(resource_class):
            args["region"] = self._region
        ignored = [_CAMEL.sub(lambda m: m.group(1).upper(), arg) for arg in found.owned_args(request)]
        resource = resource_class(
            f"{name}-{request.key}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on, ignore_changes=ignored or None),
            **{k: v for k, v in args.items() if v is not None},
        )
        self.resources[request.key] = resource
        return resource
