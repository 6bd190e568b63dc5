"""Domain layer: the gallery (Milvus, in memory), enrolment, extraction of gallery templates and threshold
calibration. Usable without Kafka.
"""
