"""The event contract (events.py) and the decoder from raw Kafka bytes (decode.py)."""
