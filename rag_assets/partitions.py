"""One partition per configured source; the sources file, not the code, decides which exist."""

import dagster as dg

source_partitions = dg.DynamicPartitionsDefinition(name="sources")
