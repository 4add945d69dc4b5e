"""Attacks on the running platform: what a hostile customer or upstream system gets."""
