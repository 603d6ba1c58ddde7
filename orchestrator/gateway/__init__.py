"""The OpenAI-compatible HTTP gateway the controller hosts."""
