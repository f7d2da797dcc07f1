"""Cluster topology: placement rules, membership, routing."""
