"""DeltaForge operator: kopf handlers that reconcile `Pipeline` resources into worker Deployments.

Kept as its own import root (`operator/deltaforge_operator`) because a package named `operator`
at the repository root would shadow Python's standard `operator` module.
"""
