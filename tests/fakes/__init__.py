"""Stand-in HTTP servers for runtimes that cannot run on a test machine.

Each speaks the documented HTTP API of one runtime (Ollama, Foundry Local,
vLLM, a plain OpenAI-compatible endpoint), listens on 127.0.0.1 on a free port,
records the requests it gets, and keeps just enough state (models on disk,
loaded models) for an adapter's calls to have observable effects.
"""
