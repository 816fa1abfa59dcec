"""ECS Fargate target: pure AWS request builders, the EcsWorkload component (pulumi-aws, extra `aws`)."""
