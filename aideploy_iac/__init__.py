"""Model deployments as Pulumi component resources.

Import this package in your own Pulumi program. Only ``pulumi`` and ``pulumi-kubernetes`` are
needed to import it; the AWS, GCP and Azure provider SDKs are imported only when a deployment
targets that cloud, so install just the extras you use (``aideploy[kubernetes,aws]``).
"""
