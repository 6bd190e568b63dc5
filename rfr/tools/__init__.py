"""Tools layer: the `rfr` CLI, the local stack, the demo, evaluation and dataset helpers.
"""
