"""Model backends: the protocol in base.py, one module per engine."""
