"""th: provenance."""
