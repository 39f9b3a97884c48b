"""th: detect."""
