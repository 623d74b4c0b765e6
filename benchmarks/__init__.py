"""Scripts that print tables and save JSON, with their baselines measured in the same run."""
