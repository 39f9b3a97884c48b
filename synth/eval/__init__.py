"""Evaluation: the th eval self-reenactment protocol and its plain metric functions."""
