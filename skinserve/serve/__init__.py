"""Serving, torch-free: settings, uploads, the batched model, HTTP answers and errors, schemas, prediction log."""
