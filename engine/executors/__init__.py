"""Pipeline executors: one module per backend."""
