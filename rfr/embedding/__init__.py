"""Domain layer: face templates (FaceNet embeddings) and the compute device. Usable without Kafka.
"""
