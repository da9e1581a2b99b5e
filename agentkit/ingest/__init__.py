"""Ingestion: loaders turn files into Documents, chunking turns Documents into Passages."""
