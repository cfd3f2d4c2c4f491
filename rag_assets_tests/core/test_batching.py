"""Token-budget batches and halving on out-of-memory (the CUDA path's policy, proven on CPU)."""

import pytest

from rag_assets.core.batching import is_out_of_memory, plan_batches, run_halving_on_oom


def test_batches_are_longest_first_and_within_the_token_budget():
    lengths = [10, 200, 30, 200, 50, 5, 120]
    batches = plan_batches(lengths, token_budget=400)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 400
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert batches[0] == [1, 3]


def test_a_row_longer_than_the_budget_gets_a_batch_of_its_own():
    assert plan_batches([900, 10], token_budget=100) == [[0], [1]]


def test_inputs_that_fit_one_batch_at_their_longest_length_share_one_batch():
    # A small update: six chunks of six lengths are one shape for the model, not six.
    assert plan_batches([40, 250, 90, 17, 130, 200], token_budget=8192, multiple=16) == [[1, 5, 4, 2, 0, 3]]
    # One row more than the budget allows at the longest length: batches by length again.
    assert len(plan_batches([256] + [16] * 32, token_budget=32 * 256, multiple=16)) == 2
    assert len(plan_batches([16] * 5, token_budget=10_000, max_rows=4)) == 2


class FakeOOM(RuntimeError):
    def __init__(self):
        super().__init__("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_halves_the_batch_until_it_fits():
    seen = []

    def run(rows):
        seen.append(len(rows))
        if len(rows) > 2:
            raise FakeOOM()
        return [r * 10 for r in rows]

    halvings = []
    assert run_halving_on_oom(list(range(8)), run, on_halve=halvings.append) == [r * 10 for r in range(8)]
    assert seen == [8, 4, 2, 2, 4, 2, 2] and halvings == [8, 4, 4]


def test_other_errors_and_single_rows_are_not_retried():
    with pytest.raises(ValueError):
        run_halving_on_oom([1, 2], lambda rows: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(FakeOOM):
        run_halving_on_oom([1], lambda rows: (_ for _ in ()).throw(FakeOOM()))


def test_out_of_memory_is_recognised_by_type_or_message():
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(FakeOOM())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
