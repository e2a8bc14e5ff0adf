"""Candidate sources behind one protocol: the Qdrant index of chunk embeddings."""
