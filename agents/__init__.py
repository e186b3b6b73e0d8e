"""Stream processing: the Faust app (app.py) and its batch hot path (pipeline.py)."""
