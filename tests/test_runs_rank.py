"""``glomssl.runs.global_rank``: which process of a distributed launch acts as rank zero (writes the
run folder). Only one process of a job may; on a second node the first local process is not it."""

from __future__ import annotations

import pytest

from glomssl.runs import global_rank, is_rank_zero

VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("env", "rank"),
    [
        ({}, 0),  # not distributed
        ({"RANK": "3", "LOCAL_RANK": "1"}, 3),  # torchrun: the global rank wins
        ({"SLURM_PROCID": "5", "LOCAL_RANK": "1"}, 5),
        ({"LOCAL_RANK": "1"}, 1),  # one node, a process the launcher started
        ({"NODE_RANK": "0", "LOCAL_RANK": "1"}, 1),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}, 4),
        ({"NODE_RANK": "2", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}, 11),
        ({"GROUP_RANK": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}, 2),
        ({"RANK": "x", "LOCAL_RANK": "2"}, 2),  # a malformed variable is passed over
    ],
)
def test_global_rank_from_the_launchers_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert global_rank() == rank


@pytest.mark.parametrize(
    "env",
    [
        {"NODE_RANK": "1"},  # the launching process on the second node (Lightning starts the rest)
        {"NODE_RANK": "1", "LOCAL_RANK": "0"},  # without LOCAL_WORLD_SIZE
        {"GROUP_RANK": "3", "LOCAL_RANK": "0"},
    ],
)
def test_the_first_process_of_another_node_is_not_rank_zero(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert not is_rank_zero()
