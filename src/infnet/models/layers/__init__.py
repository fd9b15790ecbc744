"""Layers shared by several models, one idea a module; a layer of one model only lives in
that model's file."""
