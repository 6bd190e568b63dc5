"""Repeat unknown offenders: faces that got no candidate grouped into clusters of one unknown person (domain: no
Kafka; the cluster service, services/cluster/, is its adapter)."""
