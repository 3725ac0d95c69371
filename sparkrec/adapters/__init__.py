"""Adapters: public data sets into the landing contract of DESIGN.md (raw events + item catalog)."""
