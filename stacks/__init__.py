"""The Pulumi programs that ``pulumi up`` runs (see the root ``Pulumi.yaml``) and the API runs inline."""
