"""Test helpers shared by several test files: independent references and stand-ins for model parts."""
