"""Fuzzing the gRPC APIs with malformed requests: raw wire bytes and hostile field values.

`wire` makes undecodable and odd encodings, `values` fills messages with hostile
values, `node` and `controller` know each API's requests, and `runner` sends the
cases to a live server and checks every answer.
"""
