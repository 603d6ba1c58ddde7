"""The fleet dashboard: a browser page served by the controller under `/ui` on the gateway's
listener, and the JSON and event-stream API behind it (the controller API's own messages)."""
