"""The ground every vidinsight package stands on: one settings object and one catalogue of errors.

This package imports nothing of the project, so every other package may import it.
"""
