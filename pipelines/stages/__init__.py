"""Pipeline stages: a CPU stage that reads and decodes inputs, and a model stage (actor pool) per job.

Each module declares the columns its stages exchange and its output schema (``pipelines.schemas``).
"""
