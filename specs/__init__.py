"""The pipeline spec JSON Schema and example specs (package data)."""
