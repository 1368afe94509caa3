"""Frosty: a character-level GPT and the experiment framework around it."""
