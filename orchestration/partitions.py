"""Partitions: one dynamic partition per stream window (added by the landing sensor)."""

import dagster as dg

WINDOWS_PARTITION = "windows"

windows_partitions = dg.DynamicPartitionsDefinition(name=WINDOWS_PARTITION)
