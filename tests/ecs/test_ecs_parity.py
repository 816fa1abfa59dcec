"""Parity: what EcsWorkload creates under the mocked engine is exactly what the builder (and `render`) says.

Each pulumi-aws child's wire inputs are mapped back to the botocore request(s) they stand for, by an
inverse written here independently of the component's translations; with every ref resolved to the
value the mocked engine gave, the result must equal `build_requests(spec)`: no request missing, none
extra, no field dropped or changed. So `killsafe render --target ecs` and `pulumi up` deploy the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pulumi.runtime import rpc

from killsafe.ecs import build
from killsafe.ecs.component import EcsWorkload
from killsafe.ecs.network import DEFAULT_EGRESS
from killsafe.ecs.requests import resolve
from tests.ecs.harness import VARIANTS, aws_children, ecs_spec, ref_lookup, run_aws
from tests.kubernetes.test_component import Registration, wire_json

Request = tuple[str, str, dict[str, Any]]


def _plain(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return wire_json(value)


def _pairs(tags: dict[str, str], lower: bool = False) -> list[dict[str, str]]:
    k, v = ("key", "value") if lower else ("Key", "Value")
    return [{k: key, v: value} for key, value in tags.items()]


def _some(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _cluster(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {"clusterName": i["name"], "settings": i["settings"], "tags": _pairs(i["tags"], lower=True)}
    return [("ecs", "CreateCluster", params)]


def _log_group(i: dict[str, Any], child: Registration) -> list[Request]:
    return [
        ("logs", "CreateLogGroup", {"logGroupName": i["name"], "tags": i["tags"]}),
        ("logs", "PutRetentionPolicy", {"logGroupName": i["name"], "retentionInDays": i["retentionInDays"]}),
    ]


def _security_group(i: dict[str, Any], child: Registration) -> list[Request]:
    create = {
        "GroupName": i["name"],
        "Description": i["description"],
        "VpcId": i["vpcId"],
        "TagSpecifications": [{"ResourceType": "security-group", "Tags": _pairs(i["tags"])}],
    }
    revoke = {"GroupId": f"{child.name}-id", "IpPermissions": [DEFAULT_EGRESS]}
    return [("ec2", "CreateSecurityGroup", create), ("ec2", "RevokeSecurityGroupEgress", revoke)]


def _sg_rule(operation: str) -> Callable[[dict[str, Any], Registration], list[Request]]:
    def inverse(i: dict[str, Any], child: Registration) -> list[Request]:
        permission: dict[str, Any] = {"IpProtocol": i["ipProtocol"], "FromPort": i["fromPort"], "ToPort": i["toPort"]}
        if "referencedSecurityGroupId" in i:
            permission["UserIdGroupPairs"] = [
                {"GroupId": i["referencedSecurityGroupId"], "Description": i["description"]}
            ]
        elif "cidrIpv6" in i:
            permission["Ipv6Ranges"] = [{"CidrIpv6": i["cidrIpv6"], "Description": i["description"]}]
        else:
            permission["IpRanges"] = [{"CidrIp": i["cidrIpv4"], "Description": i["description"]}]
        return [("ec2", operation, {"GroupId": i["securityGroupId"], "IpPermissions": [permission]})]

    return inverse


def _role(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {
        "RoleName": i["name"],
        "AssumeRolePolicyDocument": i["assumeRolePolicy"],
        "Description": i["description"],
        "MaxSessionDuration": i["maxSessionDuration"],
        "Tags": _pairs(i["tags"]),
    }
    return [("iam", "CreateRole", params)]


def _role_policy(i: dict[str, Any], child: Registration) -> list[Request]:
    return [("iam", "PutRolePolicy", {"RoleName": i["role"], "PolicyName": i["name"], "PolicyDocument": i["policy"]})]


def _subnet_group(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {
        "CacheSubnetGroupName": i["name"],
        "CacheSubnetGroupDescription": i["description"],
        "SubnetIds": i["subnetIds"],
        "Tags": _pairs(i["tags"]),
    }
    return [("elasticache", "CreateCacheSubnetGroup", params)]


def _parameter_group(i: dict[str, Any], child: Registration) -> list[Request]:
    create = {
        "CacheParameterGroupName": i["name"],
        "CacheParameterGroupFamily": i["family"],
        "Description": i["description"],
        "Tags": _pairs(i["tags"]),
    }
    values = [{"ParameterName": p["name"], "ParameterValue": p["value"]} for p in i["parameters"]]
    modify = {"CacheParameterGroupName": i["name"], "ParameterNameValues": values}
    return [("elasticache", "CreateCacheParameterGroup", create), ("elasticache", "ModifyCacheParameterGroup", modify)]


def _replication_group(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {
        "ReplicationGroupId": i["replicationGroupId"],
        "ReplicationGroupDescription": i["description"],
        "Engine": i["engine"],
        "EngineVersion": i["engineVersion"],
        "CacheNodeType": i["nodeType"],
        "ClusterMode": i["clusterMode"],
        "NumCacheClusters": i["numCacheClusters"],
        "AutomaticFailoverEnabled": i["automaticFailoverEnabled"],
        "MultiAZEnabled": i["multiAzEnabled"],
        "CacheParameterGroupName": i["parameterGroupName"],
        "CacheSubnetGroupName": i["subnetGroupName"],
        "SecurityGroupIds": i["securityGroupIds"],
        "Port": i["port"],
        "TransitEncryptionEnabled": i["transitEncryptionEnabled"],
        "AtRestEncryptionEnabled": i["atRestEncryptionEnabled"],
        "AuthToken": i["authToken"],
        "AutoMinorVersionUpgrade": i["autoMinorVersionUpgrade"],
        "SnapshotRetentionLimit": i["snapshotRetentionLimit"],
        "Tags": _pairs(i["tags"]),
    }
    return [("elasticache", "CreateReplicationGroup", params)]


def _secret(i: dict[str, Any], child: Registration) -> list[Request]:
    params = _some(Name=i["name"], Description=i["description"], KmsKeyId=i.get("kmsKeyId"), Tags=_pairs(i["tags"]))
    return [("secretsmanager", "CreateSecret", params)]


def _secret_version(i: dict[str, Any], child: Registration) -> list[Request]:
    return [("secretsmanager", "PutSecretValue", {"SecretId": i["secretId"], "SecretString": i["secretString"]})]


def _target_group(i: dict[str, Any], child: Registration) -> list[Request]:
    check = i["healthCheck"]
    create = {
        "Name": i["name"],
        "Protocol": i["protocol"],
        "ProtocolVersion": i["protocolVersion"],
        "Port": i["port"],
        "VpcId": i["vpcId"],
        "TargetType": i["targetType"],
        "IpAddressType": i["ipAddressType"],
        "HealthCheckEnabled": check["enabled"],
        "HealthCheckProtocol": check["protocol"],
        "HealthCheckPort": check["port"],
        "HealthCheckPath": check["path"],
        "HealthCheckIntervalSeconds": check["interval"],
        "HealthCheckTimeoutSeconds": check["timeout"],
        "HealthyThresholdCount": check["healthyThreshold"],
        "UnhealthyThresholdCount": check["unhealthyThreshold"],
        "Matcher": {"HttpCode": check["matcher"]},
        "Tags": _pairs(i["tags"]),
    }
    attributes = [{"Key": "deregistration_delay.timeout_seconds", "Value": i["deregistrationDelay"]}]
    modify = {"TargetGroupArn": f"arn:mock:{child.name}", "Attributes": attributes}
    return [("elbv2", "CreateTargetGroup", create), ("elbv2", "ModifyTargetGroupAttributes", modify)]


def _listener_rule(i: dict[str, Any], child: Registration) -> list[Request]:
    conditions = []
    for condition in i["conditions"]:
        if "pathPattern" in condition:
            conditions.append(
                {"Field": "path-pattern", "PathPatternConfig": {"Values": condition["pathPattern"]["values"]}}
            )
        else:
            conditions.append(
                {"Field": "host-header", "HostHeaderConfig": {"Values": condition["hostHeader"]["values"]}}
            )
    actions = [{"Type": a["type"], "TargetGroupArn": a["targetGroupArn"]} for a in i["actions"]]
    params = {
        "ListenerArn": i["listenerArn"],
        "Priority": i["priority"],
        "Conditions": conditions,
        "Actions": actions,
        "Tags": _pairs(i["tags"]),
    }
    return [("elbv2", "CreateRule", params)]


def _task_definition(i: dict[str, Any], child: Registration) -> list[Request]:
    platform = i["runtimePlatform"]
    params = {
        "family": i["family"],
        "taskRoleArn": i["taskRoleArn"],
        "executionRoleArn": i["executionRoleArn"],
        "networkMode": i["networkMode"],
        "requiresCompatibilities": i["requiresCompatibilities"],
        "cpu": i["cpu"],
        "memory": i["memory"],
        "runtimePlatform": {
            "operatingSystemFamily": platform["operatingSystemFamily"],
            "cpuArchitecture": platform["cpuArchitecture"],
        },
        "containerDefinitions": json.loads(i["containerDefinitions"]),
        "volumes": i["volumes"],
        "tags": _pairs(i["tags"], lower=True),
    }
    return [("ecs", "RegisterTaskDefinition", params)]


def _service(i: dict[str, Any], child: Registration) -> list[Request]:
    network = i["networkConfiguration"]
    params: dict[str, Any] = {
        "cluster": i["cluster"],
        "serviceName": i["name"],
        "taskDefinition": i["taskDefinition"],
        "desiredCount": i["desiredCount"],
        "launchType": i["launchType"],
        "platformVersion": i["platformVersion"],
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": network["subnets"],
                "securityGroups": network["securityGroups"],
                "assignPublicIp": "ENABLED" if network["assignPublicIp"] else "DISABLED",
            }
        },
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": i["deploymentCircuitBreaker"],
            "maximumPercent": i["deploymentMaximumPercent"],
            "minimumHealthyPercent": i["deploymentMinimumHealthyPercent"],
        },
        "deploymentController": i["deploymentController"],
        "schedulingStrategy": i["schedulingStrategy"],
        "enableECSManagedTags": i["enableEcsManagedTags"],
        "propagateTags": i["propagateTags"],
        "enableExecuteCommand": i["enableExecuteCommand"],
        "tags": _pairs(i["tags"], lower=True),
    }
    if "loadBalancers" in i:
        params["loadBalancers"] = i["loadBalancers"]
        params["healthCheckGracePeriodSeconds"] = i["healthCheckGracePeriodSeconds"]
    return [("ecs", "CreateService", params)]


def _kms_key(i: dict[str, Any], child: Registration) -> list[Request]:
    create = {
        "Description": i["description"],
        "KeyUsage": i["keyUsage"],
        "KeySpec": i["customerMasterKeySpec"],
        "Policy": i["policy"],
        "Tags": [{"TagKey": k, "TagValue": v} for k, v in i["tags"].items()],
    }
    assert i["enableKeyRotation"] is True
    return [("kms", "CreateKey", create), ("kms", "EnableKeyRotation", {"KeyId": f"{child.name}-key-id"})]


def _topic(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {"Name": i["name"], "Attributes": {"KmsMasterKeyId": i["kmsMasterKeyId"]}, "Tags": _pairs(i["tags"])}
    return [("sns", "CreateTopic", params)]


def _dimensions(mapping: dict[str, str]) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in mapping.items()]


def _alarm(i: dict[str, Any], child: Registration) -> list[Request]:
    metrics = []
    for query in i["metricQueries"]:
        entry: dict[str, Any] = {"Id": query["id"]}
        if "expression" in query:
            entry |= {"Expression": query["expression"], "Label": query["label"]}
        else:
            m = query["metric"]
            entry["MetricStat"] = {
                "Metric": {
                    "Namespace": m["namespace"],
                    "MetricName": m["metricName"],
                    "Dimensions": _dimensions(m["dimensions"]),
                },
                "Period": m["period"],
                "Stat": m["stat"],
            }
        entry["ReturnData"] = query["returnData"]
        metrics.append(entry)
    params = {
        "AlarmName": i["name"],
        "AlarmDescription": i["alarmDescription"],
        "ActionsEnabled": i["actionsEnabled"],
        "AlarmActions": i["alarmActions"],
        "OKActions": i["okActions"],
        "Metrics": metrics,
        "EvaluationPeriods": i["evaluationPeriods"],
        "DatapointsToAlarm": i["datapointsToAlarm"],
        "Threshold": float(i["threshold"]),
        "ComparisonOperator": i["comparisonOperator"],
        "TreatMissingData": i["treatMissingData"],
        "Tags": _pairs(i["tags"]),
    }
    return [("cloudwatch", "PutMetricAlarm", params)]


def _scaling_target(i: dict[str, Any], child: Registration) -> list[Request]:
    params = {
        "ServiceNamespace": i["serviceNamespace"],
        "ResourceId": i["resourceId"],
        "ScalableDimension": i["scalableDimension"],
        "MinCapacity": i["minCapacity"],
        "MaxCapacity": i["maxCapacity"],
        "Tags": i["tags"],
    }
    return [("application-autoscaling", "RegisterScalableTarget", params)]


def _scaling_policy(i: dict[str, Any], child: Registration) -> list[Request]:
    config = i["targetTrackingScalingPolicyConfiguration"]
    metrics = []
    for query in config["customizedMetricSpecification"]["metrics"]:
        entry: dict[str, Any] = {"Id": query["id"]}
        if "expression" in query:
            entry |= {"Expression": query["expression"], "Label": query["label"]}
        else:
            stat = query["metricStat"]
            metric = stat["metric"]
            entry["MetricStat"] = {
                "Metric": {
                    "Namespace": metric["namespace"],
                    "MetricName": metric["metricName"],
                    "Dimensions": [{"Name": d["name"], "Value": d["value"]} for d in metric["dimensions"]],
                },
                "Stat": stat["stat"],
            }
        entry["ReturnData"] = query["returnData"]
        metrics.append(entry)
    params = {
        "PolicyName": i["name"],
        "ServiceNamespace": i["serviceNamespace"],
        "ResourceId": i["resourceId"],
        "ScalableDimension": i["scalableDimension"],
        "PolicyType": i["policyType"],
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(config["targetValue"]),
            "CustomizedMetricSpecification": {"Metrics": metrics},
            "ScaleOutCooldown": config["scaleOutCooldown"],
            "ScaleInCooldown": config["scaleInCooldown"],
            "DisableScaleIn": config["disableScaleIn"],
        },
    }
    return [("application-autoscaling", "PutScalingPolicy", params)]


INVERSES: dict[str, Callable[[dict[str, Any], Registration], list[Request]]] = {
    "aws:ecs/cluster:Cluster": _cluster,
    "aws:cloudwatch/logGroup:LogGroup": _log_group,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _sg_rule("AuthorizeSecurityGroupIngress"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _sg_rule("AuthorizeSecurityGroupEgress"),
    "aws:iam/role:Role": _role,
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:elasticache/subnetGroup:SubnetGroup": _subnet_group,
    "aws:elasticache/parameterGroup:ParameterGroup": _parameter_group,
    "aws:elasticache/replicationGroup:ReplicationGroup": _replication_group,
    "aws:secretsmanager/secret:Secret": _secret,
    "aws:secretsmanager/secretVersion:SecretVersion": _secret_version,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:lb/listenerRule:ListenerRule": _listener_rule,
    "aws:ecs/taskDefinition:TaskDefinition": _task_definition,
    "aws:ecs/service:Service": _service,
    "aws:kms/key:Key": _kms_key,
    "aws:sns/topic:Topic": _topic,
    "aws:cloudwatch/metricAlarm:MetricAlarm": _alarm,
    "aws:appautoscaling/target:Target": _scaling_target,
    "aws:appautoscaling/policy:Policy": _scaling_policy,
}

GLOBAL_TYPES = {"aws:iam/role:Role", "aws:iam/rolePolicy:RolePolicy"}


def canonical(request: Request) -> str:
    """Type-exact text of one request; JSON-text params compared as the documents they hold."""
    service, operation, params = request
    params = dict(params)
    for name in ("AssumeRolePolicyDocument", "PolicyDocument", "SecretString", "Policy"):
        if name in params:
            params[name] = json.loads(params[name])
    return json.dumps({"service": service, "operation": operation, "params": _sorted_tags(params)}, sort_keys=True)


def _sorted_tags(value: Any) -> Any:
    """Tag lists in key order, at any depth: the engine's property maps do not keep key order."""
    if isinstance(value, dict):
        return {
            k: sorted(v, key=lambda pair: json.dumps(pair, sort_keys=True))
            if k in ("Tags", "tags", "Dimensions") and isinstance(v, list)
            else _sorted_tags(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_sorted_tags(v) for v in value]
    return value


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_created_resources_are_exactly_the_built_requests(variant: str) -> None:
    spec = VARIANTS[variant]()
    run = run_aws(lambda: EcsWorkload("emails", spec))
    assert run.error is None, run.error

    created: list[Request] = []
    for child in aws_children(run):
        inputs = _plain(child.inputs)
        region = inputs.pop("region", None)
        assert region == (None if child.type in GLOBAL_TYPES else spec.ecs.region), child.name
        created += INVERSES[child.type](inputs, child)

    lookup = ref_lookup(run, "emails")
    expected = [(r.service, r.operation, resolve(r.params, lookup)) for r in build.build_requests(spec)]
    assert sorted(map(canonical, created)) == sorted(map(canonical, expected))


def test_every_primary_request_is_one_child_named_after_its_key() -> None:
    spec = ecs_spec()
    run = run_aws(lambda: EcsWorkload("emails", spec))
    assert run.error is None
    primaries = [r.key for r in build.build_requests(spec) if r.amends is None]
    assert sorted(c.name for c in aws_children(run)) == sorted(f"emails-{key}" for key in primaries)
