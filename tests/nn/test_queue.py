"""Tests of the FIFO feature queue against a deque model, through checkpoints and in 2 processes."""

from __future__ import annotations

from collections import deque

import pytest
import torch
from torch import nn

from sslvision.nn.queue import FeatureQueue, process_local_buffers

DIM = 3


def numbered_keys(start: int, n: int) -> torch.Tensor:
    """Keys whose rows are identifiable: row i is (start + i) in every column, scaled by 1 / 7."""
    rows = torch.arange(start, start + n, dtype=torch.float32) / 7
    return rows[:, None].expand(n, DIM).clone()


def oldest_first(queue: FeatureQueue) -> torch.Tensor:
    """The valid rows oldest first: storage order rolled so the row at ``ptr`` comes first."""
    if not queue.is_full:
        return queue.contents()
    return torch.roll(queue.contents(), -int(queue.ptr), dims=0)


def deque_model(queue_length: int, initial: torch.Tensor | None = None) -> deque:
    model: deque = deque(maxlen=queue_length)
    if initial is not None:
        model.extend(initial.clone())
    return model


def as_tensor(model: deque) -> torch.Tensor:
    return torch.stack(list(model)) if model else torch.zeros(0, DIM)


def test_buffers_are_registered_with_the_documented_types():
    queue = FeatureQueue(10, DIM)
    state = queue.state_dict()
    assert set(state) == {"features", "ptr", "count"}
    assert state["features"].shape == (10, DIM) and state["features"].dtype == torch.float32
    assert state["ptr"].shape == () and state["ptr"].dtype == torch.long
    assert state["count"].dtype == torch.long and int(state["count"]) == 10
    torch.testing.assert_close(queue.features.norm(dim=1), torch.ones(10))
    assert queue.is_full
    assert "length=10" in repr(queue) and "dim=3" in repr(queue)


@pytest.mark.parametrize("random_init", [True, False])
def test_fifo_with_wrap_around_for_a_batch_size_not_dividing_the_length(random_init):
    length, batch = 10, 4
    torch.manual_seed(0)
    queue = FeatureQueue(length, DIM, random_init=random_init)
    model = deque_model(length, queue.features if random_init else None)
    written = 0
    for _ in range(7):
        keys = numbered_keys(written, batch)
        queue.enqueue(keys)
        model.extend(keys)
        written += batch
        torch.testing.assert_close(oldest_first(queue), as_tensor(model), rtol=0, atol=0)
        assert int(queue.ptr) == written % length
        assert int(queue.count) == (length if random_init else min(written, length))


def test_stream_row_k_lives_at_position_k_mod_length():
    length = 7
    queue = FeatureQueue(length, DIM, random_init=False)
    for start, n in [(0, 3), (3, 5), (8, 4), (12, 1)]:
        queue.enqueue(numbered_keys(start, n))
    for k in range(13 - length, 13):
        torch.testing.assert_close(queue.features[k % length], numbered_keys(k, 1)[0])


def test_ragged_last_batch():
    length = 9
    queue = FeatureQueue(length, DIM, random_init=False)
    model = deque_model(length)
    written = 0
    for n in [4, 4, 4, 2, 4, 4, 1]:
        keys = numbered_keys(written, n)
        queue.enqueue(keys)
        model.extend(keys)
        written += n
        torch.testing.assert_close(oldest_first(queue), as_tensor(model), rtol=0, atol=0)


def test_a_batch_larger_than_the_queue_keeps_its_last_rows_in_fifo_order():
    length = 5
    queue = FeatureQueue(length, DIM, random_init=False)
    queue.enqueue(numbered_keys(0, 2))
    queue.enqueue(numbered_keys(2, 13))
    torch.testing.assert_close(oldest_first(queue), numbered_keys(10, 5), rtol=0, atol=0)
    assert int(queue.ptr) == 15 % length and int(queue.count) == length
    queue.enqueue(numbered_keys(15, 2))
    torch.testing.assert_close(oldest_first(queue), numbered_keys(12, 5), rtol=0, atol=0)


def test_empty_init_queue_grows_until_full():
    queue = FeatureQueue(6, DIM, random_init=False)
    assert int(queue.count) == 0 and not queue.is_full
    assert queue.contents().shape == (0, DIM)
    torch.testing.assert_close(queue.features, torch.zeros(6, DIM))
    queue.enqueue(numbered_keys(0, 4))
    assert int(queue.count) == 4 and not queue.is_full
    torch.testing.assert_close(queue.contents(), numbered_keys(0, 4))
    queue.enqueue(numbered_keys(4, 4))
    assert int(queue.count) == 6 and queue.is_full
    assert queue.contents().shape == (6, DIM)
    queue.enqueue(numbered_keys(8, 0))
    assert int(queue.count) == 6 and int(queue.ptr) == 8 % 6


def test_keys_are_cast_to_float32_detached_and_not_renormalised():
    queue = FeatureQueue(4, DIM, random_init=False)
    keys = (torch.arange(2 * DIM, dtype=torch.float64).reshape(2, DIM) * 3).requires_grad_()
    queue.enqueue(keys)
    assert queue.features.dtype == torch.float32
    assert not queue.contents().requires_grad
    torch.testing.assert_close(queue.contents(), keys.detach().float())
    queue.enqueue(torch.ones(1, DIM, dtype=torch.bfloat16))
    torch.testing.assert_close(queue.contents()[2], torch.ones(DIM))


def test_wrong_key_shape_is_rejected():
    queue = FeatureQueue(4, DIM)
    with pytest.raises(ValueError, match="shape"):
        queue.enqueue(torch.zeros(2, DIM + 1))
    with pytest.raises(ValueError, match="length >= 1"):
        FeatureQueue(0, DIM)


def test_checkpoint_round_trip_resumes_identically(tmp_path):
    torch.manual_seed(1)
    queue = FeatureQueue(10, DIM, random_init=False)
    for start in range(0, 12, 4):
        queue.enqueue(numbered_keys(start, 4))
    torch.save(queue.state_dict(), tmp_path / "queue.pt")
    restored = FeatureQueue(10, DIM, random_init=True)
    restored.load_state_dict(torch.load(tmp_path / "queue.pt", weights_only=True))
    for name in ("features", "ptr", "count"):
        assert torch.equal(getattr(restored, name), getattr(queue, name)), name
    assert restored.is_full
    queue.enqueue(numbered_keys(12, 3))
    restored.enqueue(numbered_keys(12, 3))
    for name in ("features", "ptr", "count"):
        assert torch.equal(getattr(restored, name), getattr(queue, name)), name

    partial = FeatureQueue(10, DIM, random_init=False)
    partial.enqueue(numbered_keys(0, 3))
    torch.save(partial.state_dict(), tmp_path / "partial.pt")
    resumed = FeatureQueue(10, DIM, random_init=True)
    resumed.load_state_dict(torch.load(tmp_path / "partial.pt", weights_only=True))
    assert not resumed.is_full
    torch.testing.assert_close(resumed.contents(), numbered_keys(0, 3))


ROWS_PER_RANK = 3
ENQUEUES = 2
DISTRIBUTED_LENGTH = 8  # 2 ranks x 3 rows do not divide it


def rank_keys(source_rank: int, step: int) -> torch.Tensor:
    """Distinct keys per rank and step: rank r's step s rows start at 100 * r + 10 * s."""
    return numbered_keys(100 * source_rank + 10 * step, ROWS_PER_RANK)


def enqueue_on_rank(rank_index: int, num_ranks: int, out_dir) -> None:
    """Worker: enqueue this rank's keys twice into gathered and local queues, save their state."""
    gathered = FeatureQueue(DISTRIBUTED_LENGTH, DIM, gather=True, random_init=False)
    roomy = FeatureQueue(32, DIM, gather=True, random_init=False)
    local = FeatureQueue(DISTRIBUTED_LENGTH, DIM, gather=False, random_init=False)
    for step in range(ENQUEUES):
        keys = rank_keys(rank_index, step)
        for queue in (gathered, roomy, local):
            queue.enqueue(keys)
    torch.save(
        {
            "gathered": gathered.state_dict(),
            "gathered_oldest_first": oldest_first(gathered),
            "roomy": roomy.contents().clone(),
            "local_oldest_first": oldest_first(local),
        },
        out_dir / f"rank{rank_index}.pt",
    )


@pytest.mark.slow
def test_two_gloo_processes_share_one_queue_in_rank_order(distributed_run, tmp_path):
    num_ranks = 2
    distributed_run(enqueue_on_rank, tmp_path, world_size=num_ranks)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(num_ranks)]

    stream = torch.cat([rank_keys(r, step) for step in range(ENQUEUES) for r in range(num_ranks)])
    # Every rank holds the same queue: the whole stream, each step's keys in rank order ...
    for result in results:
        torch.testing.assert_close(result["roomy"], stream, rtol=0, atol=0)
        torch.testing.assert_close(
            result["gathered_oldest_first"], stream[-DISTRIBUTED_LENGTH:], rtol=0, atol=0
        )
    # ... down to the buffers, so checkpoints written by any rank agree.
    for name, tensor in results[0]["gathered"].items():
        assert torch.equal(tensor, results[1]["gathered"][name]), name
    assert int(results[0]["gathered"]["ptr"]) == len(stream) % DISTRIBUTED_LENGTH
    # Without gathering, each rank keeps only its own keys.
    for rank_index, result in enumerate(results):
        own = torch.cat([rank_keys(rank_index, step) for step in range(ENQUEUES)])
        torch.testing.assert_close(result["local_oldest_first"], own, rtol=0, atol=0)


def test_process_local_buffers_name_only_the_per_process_queues() -> None:
    module = nn.ModuleDict(
        {
            "negatives": FeatureQueue(4, 2),  # gathered: the same on every process
            "swav": nn.ModuleList([FeatureQueue(4, 2, gather=False, random_init=False)]),
        }
    )
    assert process_local_buffers(module) == ["swav.0.features", "swav.0.ptr", "swav.0.count"]
    assert set(process_local_buffers(module)) <= set(module.state_dict())
