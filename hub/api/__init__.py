"""The hub's public face: the Ask service every client protocol shares (asks.py), its gRPC
service (grpc_api.py), the OpenAI-compatible HTTP API (openai_app.py) and its metrics."""
