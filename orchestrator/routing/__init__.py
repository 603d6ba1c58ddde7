"""Request routing: which replica serves a request, and what the router learned of each."""
