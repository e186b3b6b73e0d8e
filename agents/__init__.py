"""Stream processing: the Faust app (app.py) and its batch hot path (processor.py)."""
