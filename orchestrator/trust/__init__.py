"""Cluster trust: the CA, join tokens, API keys, and who may talk to whom."""
