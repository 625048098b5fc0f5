"""Benchmark of sharded feature extraction: Prefect's plain runner vs. prefect-dask, 1 and 2 workers.

On Fashion-MNIST's pool (``--max-pool`` images, a seeded stratified subsample) with the CIFAR
ResNet-20 encoder (the supervised checkpoint in ``../shared/data`` when present, else random init:
throughput does not care), the pool is extracted in ``--shards`` parts through the
``extract_sharded`` flow (``flows/extract.py``), wall time from the call to the published file:

- ``thread x1``: ``features.runner=thread, workers=1`` - Prefect's plain runner, one part at a time
  in the flow's process;
- ``dask x1``: ``runner=dask, workers=1`` - a new LocalCluster of one worker process (cluster
  start-up, task shipping and the worker's own imports and data loading included);
- ``dask x2``: ``runner=dask, workers=2`` - two worker processes;
- the same two on a running cluster (``features.address``; started once, warmed up like the plain
  runner's process): what a long-lived cluster on GPU hosts costs per run, without start-up.

Every part runs with ``--torch-threads`` torch threads (default 1: each worker is one core, so the
1-vs-2-worker ratio measures workers, and the runners compare on equal work; on a busy machine two
OpenMP threads per process also lose more to preemption than they gain). Repetitions are interleaved
(thread, dask1, dask2, thread, ...) and medians reported: the machine may be shared. Every published file is checked to equal the first one byte for byte in ids and
floats. Reported: images/s per configuration, the 2-vs-1-worker ratio, and the distributed runner's
overhead on one worker (dask x1 / thread x1 wall time; goal <= 1.15), with and without start-up.

With a CUDA device, also images/s of a timm ResNet-50 at 224 px through ``extract_features`` vs. a
bare torch loop over the same tensors already on the GPU, both under bf16 autocast (goal >= 0.9);
without one that part prints that it was skipped.

Usage::

    uv run python bench/extraction.py                        # 20,000 images, 3 repetitions
    uv run python bench/extraction.py --max-pool 60000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

CONFIGS = {  # name -> features.runner, features.workers, a running cluster (features.address) or not
    "thread x1": ("thread", 1, False),
    "dask x1 new": ("dask", 1, False),
    "dask x2 new": ("dask", 2, False),
    "dask x1 running": ("dask", 1, True),
    "dask x2 running": ("dask", 2, True),
}


def start_cluster(workers: int) -> Any:
    """A LocalCluster that outlives the runs: what ``features.address`` points at."""
    from flows.extract import local_cluster

    return local_cluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")


def _setup(work: Path, fmnist: Path, max_pool: int) -> tuple[dict[str, Any], dict[str, str]]:
    """A project-free setting: Prefect stores in ``work``, the encoder file, the data config."""
    os.environ.update(
        {
            "PREFECT_HOME": str(work / ".prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(work / ".prefect" / "storage"),
            "PREFECT_LOGGING_LEVEL": "ERROR",
            "TQDM_DISABLE": "1",
        }
    )
    import flows  # noqa: F401 - the remaining project defaults
    from alcore.encoders import create_encoder, save_encoder
    from alcore.keys import ref

    ckpt = next((SHARED / "weights" / "cifar10-resnet").glob("resnet20-*.th"), None)
    enc = create_encoder("cifar_resnet20", weights=ckpt)
    save_encoder(enc, work / "encoder.safetensors")
    data = {"name": "fashion_mnist", "params": {"root": str(fmnist), "max_pool": max_pool, "max_test": 100}}
    return data, {**ref(work / "encoder.safetensors"), "weights": str(ckpt or "random init")}


def run_once(
    name: str, data: dict[str, Any], enc: dict[str, str], out: Path, a: argparse.Namespace, clusters: dict[int, Any]
) -> dict[str, Any]:
    from alcore.config import parse_params
    from flows.extract import extract_all

    runner, workers, running = CONFIGS[name]
    feats = {"batch_size": a.batch_size, "shards": a.shards, "runner": runner, "workers": workers}
    feats["torch_threads"] = a.torch_threads or None
    if running:
        feats["address"] = clusters[workers].scheduler_address
    p = parse_params({"experiment": {"device": "cpu", "progress": False}, "data": data, "features": feats})
    t0 = time.perf_counter()
    res = extract_all({"path": enc["path"], "sha256": enc["sha256"]}, p, "bench", {"pool": str(out)})["pool"]
    return {"wall_s": time.perf_counter() - t0, "compute_s": res["seconds"], "parts": res["parts"]}


def gpu_throughput(n: int = 2048, bs: int = 128, repeats: int = 3) -> dict[str, Any]:
    """timm ResNet-50 at 224 px on CUDA: extract_features vs. a bare torch loop (both bf16 autocast)."""
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from alcore.datasets import load_dataset
    from alcore.encoders import create_encoder
    from alcore.features import extract_features

    enc = create_encoder("resnet50", input_size=224).eval().cuda()
    ds = load_dataset("fashion_mnist", root=str(SHARED / "fashion-mnist"), max_pool=n, max_test=10)
    X = ds.pool.load_batch(np.arange(len(ds.pool)), enc.config.preprocess).cuda()  # preprocessed, on the GPU

    def bare() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for s in range(0, len(X), bs):
                enc(X[s : s + bs]).float().cpu()
        torch.cuda.synchronize()

    def ours() -> None:
        extract_features(enc, ds.pool, batch_size=bs, device="cuda", progress=False)

    best = {}
    for name, fn in (("bare", bare), ("ours", ours)):
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        best[name] = len(X) / min(ts)
    return {
        "gpu": torch.cuda.get_device_name(),
        "images": len(X),
        "ours_img_s": best["ours"],
        "bare_img_s": best["bare"],
        "ratio": best["ours"] / best["bare"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fmnist-root", type=Path, default=SHARED / "fashion-mnist")
    ap.add_argument("--max-pool", type=int, default=20000, help="images of the pool (60000: all of it)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per part in every configuration (features.torch_threads); 0: the runner's default "
        "(cores / workers for Dask workers, torch's own for the plain runner)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    if not args.fmnist_root.is_dir():
        print(f"Fashion-MNIST not found at {args.fmnist_root}: pass --fmnist-root", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="alcore-bench-extraction-"))
    data, enc = _setup(work, args.fmnist_root, args.max_pool)
    from alcore.features import read_features

    clusters = {w: start_cluster(w) for w in (1, 2)}
    print(f"warm-up (Prefect's temporary server, imports, the running clusters' workers) in {work}", flush=True)
    for name in ("thread x1", "dask x1 running", "dask x2 running"):
        warm = work / "warmup" / name.replace(" ", "") / "pool.parquet"
        run_once(name, data, enc, warm, args, clusters)
    reference = read_features(warm)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONFIGS}
    for rep in range(args.repeats):
        for name in CONFIGS:  # interleaved: a busy spell on a shared machine hits every configuration
            out = work / f"{name.replace(' ', '')}-{rep}" / "pool.parquet"
            r = run_once(name, data, enc, out, args, clusters)
            got = read_features(out)
            r["same_bytes"] = got.ids.tobytes() == reference.ids.tobytes() and got.X.tobytes() == reference.X.tobytes()
            runs[name].append(r)
            print(f"  rep {rep + 1} {name:<16} {r['wall_s']:7.1f} s wall  same bytes: {r['same_bytes']}", flush=True)
    for c in clusters.values():
        c.close()

    n = len(reference.ids)
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    cores = os.cpu_count() or 1
    print(
        f"\n## Sharded extraction: Fashion-MNIST pool, {n} images, cifar_resnet20 ({enc['weights']}), "
        f"{args.shards} parts, batch {args.batch_size}, {cores} cores, median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f} at the end\n"
    )
    hdr = (
        f"{'runner':<7} {'cluster':<24} {'workers':>7} {'torch thr/worker':>16} {'wall s':>8} {'img/s':>8} "
        f"{'part compute s':>15} {'same bytes':>10}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, (runner, workers, running) in CONFIGS.items():
        thr = args.torch_threads or (cores if runner == "thread" else max(1, cores // workers))
        where = "-" if runner == "thread" else ("running (address)" if running else "new LocalCluster per run")
        comp = statistics.median(r["compute_s"] for r in runs[name])
        same = all(r["same_bytes"] for r in runs[name])
        print(
            f"{runner:<7} {where:<24} {workers:>7} {thr:>16} {med[name]:>8.1f} {n / med[name]:>8.0f} "
            f"{comp:>15.1f} {str(same):>10}"
        )
    scaling = {k: med[f"dask x1 {k}"] / med[f"dask x2 {k}"] for k in ("running", "new")}
    overhead = {k: med[f"dask x1 {k}"] / med["thread x1"] for k in ("running", "new")}
    print(
        f"\nthroughput, 2 workers / 1 worker (dask, {cores} cores): running cluster {scaling['running']:.3f}, ", end=""
    )
    print(f"new cluster per run {scaling['new']:.3f}")
    print(
        f"distributed runner overhead on 1 worker, dask / thread wall time: running cluster {overhead['running']:.3f} ",
        end="",
    )
    print(f"(goal <= 1.15); new cluster per run {overhead['new']:.3f} (includes starting the cluster)")
    gpu = gpu_throughput()
    if "skipped" in gpu:
        print(f"\nGPU: timm ResNet-50 at 224 px vs. bare torch loop: skipped ({gpu['skipped']})")
    else:
        print(
            f"\nGPU {gpu['gpu']}: timm ResNet-50 at 224 px, {gpu['images']} images: extract_features "
            f"{gpu['ours_img_s']:.0f} img/s, bare torch loop {gpu['bare_img_s']:.0f} img/s, "
            f"ratio {gpu['ratio']:.3f} (goal >= 0.9)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "images": n,
        "shards": args.shards,
        "batch_size": args.batch_size,
        "torch_threads": args.torch_threads,
        "cores": cores,
        "runs": runs,
        "median_wall_s": med,
        "scaling_2_vs_1": scaling,
        "overhead_dask_vs_thread": overhead,
        "configs": {k: dict(zip(("runner", "workers", "running_cluster"), v, strict=True)) for k, v in CONFIGS.items()},
        "gpu": gpu,
    }
    (args.out / "extraction.json").write_text(json.dumps(result, indent=2))
    print(f"\nresults: {args.out / 'extraction.json'}  (work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
