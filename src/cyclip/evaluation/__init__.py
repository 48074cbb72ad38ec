"""Evaluation of trained models: zero-shot, linear probes, retrieval, consistency, geometry, reports."""
