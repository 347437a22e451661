"""Digest out, decisions in: what a rep reads and how their answers come back."""
