"""Faults injected at the seams, with the real systems underneath.

- `FailingMilvusResource`: a real Milvus Lite store whose client raises on the k-th upsert or the
  k-th delete of a write step (the calls before it reach Milvus for real).
- `OomEmbedderResource`: the real model, whose forward pass runs out of memory for any batch of more
  rows than the "device" fits (on the CPU by really asking torch for 4 EiB; CUDA's error is raised,
  as no GPU may be present), and records every batch size it was handed.
"""

from pathlib import Path

import dagster as dg
import torch
from pymilvus.exceptions import MilvusException

from rag_assets.resources.embedder import Embedder, EmbedderResource
from rag_assets.resources.milvus import MilvusResource, MilvusStore

INJECTED = "injected fault"


def config_of(resource: dg.ConfigurableResource) -> dict:
    """A resource's configuration, to build a faulty twin of the resource the code location builds."""
    return {name: getattr(resource, name) for name in type(resource).model_fields}


class FailingClient:
    """A MilvusClient that fails its `fail_on`-th call of `verb` ('upsert' or 'delete')."""

    def __init__(self, client, verb: str, fail_on: int):
        self._client, self._verb, self._fail_on, self._calls = client, verb, fail_on, 0

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if name != self._verb:
            return attribute

        def call(*args, **kwargs):
            self._calls += 1
            if self._calls == self._fail_on:
                raise MilvusException(code=1, message=f"{INJECTED}: {self._verb} #{self._calls} refused")
            return attribute(*args, **kwargs)

        return call


class FailingMilvusResource(MilvusResource):
    """MilvusResource whose stores fail the `fail_on`-th `verb` call; one count per opened store (per write
    step)."""

    verb: str
    fail_on: int

    def open(self) -> MilvusStore:
        store = super().open()
        store.client = FailingClient(store.client, self.verb, self.fail_on)
        return store


class OomEmbedder(Embedder):
    def __init__(self, *args, max_rows: int, error: str, log: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_rows, self.error, self.log = max_rows, error, log

    def forward(self, features: dict):
        rows = len(features["input_ids"])
        with self.log.open("a") as log:
            log.write(f"{rows}\n")
        if rows > self.max_rows:
            if self.error == "cuda":
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate 2.00 GiB ({rows} rows)"
                )
            torch.empty(1 << 62, dtype=torch.uint8)  # the CPU allocator's own failure (a RuntimeError)
            raise AssertionError("an allocation of 4 EiB succeeded")
        return super().forward(features)


class OomEmbedderResource(EmbedderResource):
    """The embedder resource, with a device that holds at most `max_rows` rows per forward pass."""

    max_rows: int
    error: str  # "cuda": torch.cuda.OutOfMemoryError; "cpu": a real failed allocation on the CPU
    log_path: str  # one line per forward pass: the batch's row count

    def get(self) -> Embedder:
        if self._embedder is None:
            self._embedder = OomEmbedder(
                self.model,
                device=self.device,
                precision=self.precision,
                batch_tokens=self.batch_tokens,
                max_rows=self.max_rows,
                error=self.error,
                log=Path(self.log_path),
            )
        return self._embedder
