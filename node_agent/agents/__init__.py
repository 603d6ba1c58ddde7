"""Agents hosted on the node: instructions + model + tools, run with Agent Framework."""
