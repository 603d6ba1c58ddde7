"""The data plane: the OpenAI-compatible gateway, the router, balancers, circuit breakers,
retry budget and escalation. Any program can host it; it depends only on the contract."""
