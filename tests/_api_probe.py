"""Run as a script: one flow on the Dask runner, without PREFECT_API_URL (a temporary server); prints,
per task run, the worker's pid and the Prefect API it reported to, as JSON."""

from __future__ import annotations

import json
import os

from prefect import flow, task


@task
def where() -> tuple[int, str]:
    from prefect.client.orchestration import get_client

    return os.getpid(), str(get_client(sync_client=True).api_url)


@flow
def probe() -> list[tuple[int, str]]:
    from flows.extract import shared_api

    with shared_api():
        return [where.submit().result() for _ in range(2)]


def main() -> None:
    from prefect.client.orchestration import get_client

    from alcore.config import FeaturesCfg
    from flows.extract import task_runner

    runs = probe.with_options(task_runner=task_runner(FeaturesCfg(runner="dask", workers=1)))()
    print(json.dumps({"flow": [os.getpid(), str(get_client(sync_client=True).api_url)], "tasks": runs}))


if __name__ == "__main__":
    main()
