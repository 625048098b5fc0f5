"""A run's page in the Prefect UI says what it did and why a retry happened: alcore's progress
lines and Prefect's INFO records reach the run's logs (the console keeps warnings and errors)."""

from __future__ import annotations

import logging

import pytest

from alcore.config import parse_params
from tests._tiny import tiny

pytestmark = pytest.mark.integration


def run_logs(flow_run_id) -> list:
    """Every log record the API holds for the flow run (its tasks' included), once sent."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)  # the records go to the API in batches, from a background worker
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


def test_a_stage_logs_what_it_did_at_info(prefect_harness, tmp_path):
    from flows.pipeline import prepare

    state = prepare(parse_params(tiny()), root=str(tmp_path), return_state=True)
    logs = run_logs(state.state_details.flow_run_id)
    said = [r.message for r in logs if r.level == logging.INFO]
    assert "dataset digits: 300 pool / 100 test images, 10 classes" in said, said


def test_a_retry_and_its_reason_are_in_the_runs_log(prefect_harness):
    from prefect import flow, task

    from tasks._common import RETRY

    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the disk was busy")
        return len(calls)

    step = task(flaky, name="flaky", **{**RETRY, "retry_delay_seconds": 0})  # alcore's retry policy

    @flow
    def run() -> int:
        return step()

    state = run(return_state=True)
    assert state.result() == 2
    info = [r.message for r in run_logs(state.state_details.flow_run_id) if r.level == logging.INFO]
    assert any("the disk was busy" in m and "Retry 1/2" in m for m in info), info
