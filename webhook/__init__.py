"""kubefence: an admission webhook keeping workloads inside network fences and audited scope."""

__version__ = "0.1.0"
