"""Pure logic: plain functions over plain data. Nothing here imports dagster."""
