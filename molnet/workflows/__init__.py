"""The verbs users run: evaluate a model on data, run MD, the demo."""
