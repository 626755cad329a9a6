"""The detector lifecycle in the cloud: registry, training jobs, validation, signed bundles."""
