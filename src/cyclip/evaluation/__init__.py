"""Evaluation of trained models: zero-shot classification and consistency analysis."""
