"""Knowledge sources: the protocol in base.py, one module per backend."""
