"""Core layer: settings, message schemas, topics, Kafka helpers and the at-least-once stream loop, imaging,
metrics, logging, errors, blobs. Imports nothing else of RFR.
"""
