"""dpl storage layer: bytes and metadata."""
