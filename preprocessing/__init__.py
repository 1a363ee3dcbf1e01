"""Corpus -> vocabulary + character-encoded Parquet on Ray Data (not built yet)."""
