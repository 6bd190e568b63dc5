"""Evaluation: identification accuracy, threshold calibration and speed on labelled faces (``rfr eval``)."""
