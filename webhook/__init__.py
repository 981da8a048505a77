"""kubefence: a validating admission webhook that keeps workloads inside network fences and audited scope."""

__version__ = "0.1.0"
