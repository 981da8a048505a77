"""Cluster state for decisions: the ClusterView protocol (pure) and its sources (files, live)."""
