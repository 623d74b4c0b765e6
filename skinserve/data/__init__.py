"""Datasets: readers for the Shine layout, image folders and CSV manifests; synthesis, splits and ingest."""
