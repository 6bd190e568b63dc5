"""Domain layer: face detection, alignment, quality grading and the gate. Usable without Kafka.
"""
