"""Plan model batches by a token budget, and survive out-of-memory by halving them.

Sorting by length keeps padding low; bounding rows x longest-row keeps every batch about the same
cost on the device, whatever the mix of short and long chunks.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def padded_length(length: int, multiple: int, cap: int | None = None) -> int:
    """`length` rounded up to a multiple of `multiple` (and at most `cap`)."""
    rounded = -(-length // multiple) * multiple
    return min(rounded, cap) if cap else rounded


def plan_batches(
    lengths: Sequence[int], token_budget: int, max_rows: int = 1024, multiple: int = 1
) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with rows x padded length <= token_budget.

    Lengths are rounded up to `multiple` and a batch never mixes rounded lengths, so batches come
    in few shapes: (budget // length, length) and one remainder per length. Few shapes matter on
    CPU, where oneDNN compiles and caches kernels per shape (hundreds of shapes cost seconds of
    compilation and gigabytes of cache), and on CUDA, where tensor cores want multiples of 8.

    Inputs that fit one batch at their longest length go in one batch: a small update (a few chunks
    or queries of different lengths) then costs one new shape, not one per length (on a bf16 CPU
    each new shape's first pass took about 0.3 s, more than the pass itself).
    """
    if lengths and _fit_one_batch(lengths, token_budget, max_rows, multiple):
        return [sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    current_length = 0
    for index in order:
        length = padded_length(lengths[index], multiple)
        rows = max(1, min(max_rows, token_budget // length))
        if current and (length != current_length or len(current) >= rows):
            batches.append(current)
            current = []
        current_length = length
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _fit_one_batch(lengths: Sequence[int], token_budget: int, max_rows: int, multiple: int) -> bool:
    longest = padded_length(max(lengths), multiple)
    return len(lengths) <= max_rows and len(lengths) * longest <= token_budget


# How torch words an allocation failure: CUDA ("CUDA out of memory"), and the CPU allocator, which
# raises a plain RuntimeError ("DefaultCPUAllocator: can't allocate memory", older: "not enough memory").
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a CPU allocator failure, or a RuntimeError saying so."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OUT_OF_MEMORY_MESSAGES)


def run_halving_on_oom(
    items: list[T],
    run: Callable[[list[T]], list],
    on_halve: Callable[[int], None] | None = None,
) -> list:
    """run(items), splitting the batch in two and retrying each half whenever it runs out of memory."""
    try:
        return run(items)
    except BaseException as error:
        if not is_out_of_memory(error) or len(items) == 1:
            raise
    if on_halve:
        on_halve(len(items))
    middle = len(items) // 2
    return run_halving_on_oom(items[:middle], run, on_halve) + run_halving_on_oom(
        items[middle:], run, on_halve
    )
