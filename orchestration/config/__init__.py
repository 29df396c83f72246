"""Settings of a streamtune home (``streamtune.toml``) and the deployment profile they select. No Dagster imports."""
