"""th: synth."""
