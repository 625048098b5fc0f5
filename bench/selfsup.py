"""Which strategy wins at which budget, on self-supervised features (NTKCPL's question).

For each setting a ResNet-20 is pre-trained with SimCLR on the unlabeled pool (no labels; with
``--pretrained``, an ImageNet backbone such as EfficientNet-Lite0 instead), the pool
and test features are extracted once, and the rotation pretext task gives PT4AL its per-image
losses. Then every strategy runs the same active-learning loop on those frozen features: a proxy
MLP (METHODS.md section 1) trained from scratch each round, budgets from 1 to 50 labels per class,
several seeds. Cold-start strategies (TypiClust, ProbCover, PT4AL, NTKCPL) choose the first batch
themselves; the others start from random labels, as the pipeline does.

Settings: ``fmnist`` (Fashion-MNIST, a stratified pool subsample) and ``cifar`` (the exact CIFAR-10
subset of ../shared). The table gives the proxy's test accuracy per budget, mean and std over
seeds, the best per budget marked ``*``; then, per strategy, the budgets where it is at least as
good as the best other strategy, and the goals of the issue.

Usage::

    uv run python bench/selfsup.py                                  # both settings, 3 seeds
    uv run python bench/selfsup.py --settings fmnist --seeds 0 --ssl-epochs 2   # a quick look
    uv run python bench/selfsup.py --pretrained --arch efficientnet_lite0 --input-size 48   # ImageNet Lite0

The encoder, features and pretext losses are cached under ``--work`` (default bench/out/work), so a
re-run only repeats the selection loops.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

STRATEGIES = ["random", "margin", "coreset", "typiclust", "probcover", "pt4al", "ntkcpl", "ntkcpl:centred=true"]


def parse_strategy(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` (values read as YAML) -> (name, params)."""
    import yaml

    name, _, rest = spec.partition(":")
    params = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}
    return name, params


def data_cfg(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    if setting == "fmnist":
        return {
            "name": "fashion_mnist",
            "params": {"root": str(SHARED / "fashion-mnist"), "max_pool": args.pool, "max_test": args.test},
        }
    path = SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"
    return {"name": "npz", "params": {"path": str(path), "max_pool": args.pool, "max_test": args.test}}


def encoder_cfg(args: argparse.Namespace) -> Any:
    """``--pretrained``: the ImageNet weights of ``--arch`` (e.g. efficientnet_lite0 from its package)
    at ``--input-size`` and ``--feature-level``, no SimCLR; otherwise SimCLR on the pool."""
    from alcore.config import EncoderCfg

    if args.pretrained:
        return EncoderCfg(arch=args.arch, pretrained=True, input_size=args.input_size, feature_level=args.feature_level)
    return EncoderCfg(arch=args.arch, ssl={"method": "simclr", "epochs": args.ssl_epochs, "batch_size": 256})


def describe_encoder(args: argparse.Namespace) -> str:
    if args.pretrained:
        lvl = "last level" if args.feature_level is None else f"level {args.feature_level}"
        return f"ImageNet {args.arch} {args.input_size or 'native'} px {lvl}"
    return f"SimCLR {args.arch} ({args.ssl_epochs} epochs)"


def prepare(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """Encoder (``--pretrained`` weights, or SimCLR on the pool), pool/test features and pretext
    losses, cached in ``work``."""
    from alcore.config import DataCfg, PretextCfg
    from alcore.encoders import load_encoder, save_encoder
    from alcore.features import read_features, write_features
    from alcore.keys import ref
    from alcore.steps import compute_features, load_data, pretext_losses, pretrained_encoder, stopwatch

    dc = DataCfg(**data_cfg(setting, args))
    ec = encoder_cfg(args)
    pc = PretextCfg(epochs=args.pretext_epochs, init=args.pretext_init)
    key = hashlib.sha256(
        json.dumps([dc.model_dump(), ec.model_dump(), pc.model_dump(), args.seed_ssl], sort_keys=True).encode()
    ).hexdigest()[:12]
    work = args.work / f"{setting}-{key}"
    work.mkdir(parents=True, exist_ok=True)
    data = load_data(dc)
    times = json.loads((work / "times.json").read_text()) if (work / "times.json").is_file() else {}
    enc_path = work / "encoder.safetensors"
    if not enc_path.is_file():
        with stopwatch() as t:
            enc = pretrained_encoder(ec, data, seed=args.seed_ssl, device="auto", progress=True)
        save_encoder(enc, enc_path)
        times["pretrained" if args.pretrained else "simclr"] = t["seconds"]
    enc = load_encoder(enc_path)
    for split in ("pool", "test"):
        f = work / f"{split}.parquet"
        if not f.is_file():
            with stopwatch() as t:
                fs = compute_features(enc, data, split, batch_size=256, device="auto", progress=True)
            write_features(f, fs.ids, fs.X, fs.spec)
            times[f"extract_{split}"] = t["seconds"]
    pre = work / "pretext.parquet"
    if not pre.is_file():
        times["pretext"] = pretext_losses(
            ref(enc_path), dc, data.fingerprint(), pc, seed=args.seed_ssl, device="auto", progress=True, out=str(pre)
        )["seconds"]
    (work / "times.json").write_text(json.dumps(times, indent=2))
    pool, test = read_features(work / "pool.parquet"), read_features(work / "test.parquet")
    return {"data": data, "data_cfg": dc, "pool": pool, "test": test, "times": times, "work": work}


def run_loop(prep: dict[str, Any], strategy: str, seed: int, budgets: list[int], args: argparse.Namespace) -> dict:
    """One active-learning run of the learner (SVPp on the frozen features, plain calls, a fresh
    proxy each round): proxy test accuracy and selection seconds at every budget."""
    import shutil

    from alcore.config import Params
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs

    work = prep["work"]
    base, params = parse_strategy(strategy)
    p = Params.model_validate(
        {
            "experiment": {"name": "bench", "seed": seed, "device": "cpu", "progress": False},
            "data": prep["data_cfg"].model_dump(),
            "proxy": {"hidden": args.hidden, "epochs": args.proxy_epochs},
            "al": {"pipeline": "svpp", "strategy": base, "strategy_params": params, "rounds": len(budgets)},
        }
    )
    inputs = RunInputs.from_files(
        p.data,
        pool=work / "pool.parquet",
        test=work / "test.parquet",
        encoder=work / "encoder.safetensors",
        pretext=work / "pretext.parquet",
    )
    run_dir = work / "runs" / f"{strategy.replace(':', '_')}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # every run starts afresh
    schedule = [budgets[0], *np.diff(budgets).tolist()]
    learner = ActiveLearner.open(p, inputs, PlainSteps(), run_dir=run_dir, schedule=schedule)
    learner.run(final=False)
    st = learner.state
    rows = {r["round"]: r for r in st.ledger.rows()}
    return {
        "accuracy": [st.records[r]["proxy_accuracy"] for r in range(1, len(budgets) + 1)],
        "select_seconds": [rows[r]["seconds_scoring"] for r in range(1, len(budgets) + 1)],
        "classes_covered": int(np.unique(st.labels.labels_of(st.labels.labeled_ids)).size),
    }


def table(budgets: list[int], res: dict[str, list[dict]]) -> tuple[str, dict[str, list[int]]]:
    means = {s: np.mean([r["accuracy"] for r in runs], axis=0) for s, runs in res.items()}
    stds = {s: np.std([r["accuracy"] for r in runs], axis=0) for s, runs in res.items()}
    names = list(res)
    head = "| labels | " + " | ".join(names) + " |"
    lines = [head, "|---:|" + "---:|" * len(names)]
    wins: dict[str, list[int]] = {s: [] for s in names}
    for i, b in enumerate(budgets):
        best = max(means[s][i] for s in names)
        cells = []
        for s in names:
            mark = "*" if means[s][i] == best else " "
            cells.append(f"{100 * means[s][i]:5.1f}±{100 * stds[s][i]:3.1f}{mark}")
            if means[s][i] >= max(means[t][i] for t in names if t != s):
                wins[s].append(b)
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines), wins


def plot(budgets: list[int], res: dict[str, list[dict]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s, runs in res.items():
        a = 100 * np.asarray([r["accuracy"] for r in runs])
        m, sd = a.mean(0), a.std(0)
        lw = 2.5 if s.startswith(("ntkcpl", "pt4al")) else 1.3
        ax.plot(budgets, m, marker="o", ms=3, lw=lw, label=s)
        ax.fill_between(budgets, m - sd, m + sd, alpha=0.12)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("labels (log scale)")
    ax.set_ylabel("proxy test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def parser(doc: str | None = __doc__) -> argparse.ArgumentParser:
    """The options (shared with bench/as3l.py, so both find the same cached encoders)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["fmnist", "cifar"], choices=["fmnist", "cifar"])
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--per-class", nargs="+", type=int, default=[1, 2, 5, 10, 20, 50], help="budgets, labels per class")
    ap.add_argument("--pool", type=int, default=5000, help="pool size (a stratified subsample)")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--arch", default="cifar_resnet20")
    ap.add_argument(
        "--pretrained", action="store_true", help="ImageNet weights of --arch (e.g. efficientnet_lite0), no SimCLR"
    )
    ap.add_argument("--input-size", type=int, default=None, help="--pretrained: input pixels (e.g. 48)")
    ap.add_argument("--feature-level", type=int, default=None, help="--pretrained: feature level (default: last)")
    ap.add_argument("--ssl-epochs", type=int, default=15)
    ap.add_argument("--seed-ssl", type=int, default=0)
    ap.add_argument("--pretext-epochs", type=int, default=5)
    ap.add_argument("--pretext-init", default="encoder", choices=["encoder", "scratch"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--proxy-epochs", type=int, default=100)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "work")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()

    import torch

    print(f"machine: {torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}")
    for setting in args.settings:
        t0 = time.perf_counter()
        prep = prepare(setting, args)
        C = prep["data"].n_classes
        budgets = [k * C for k in args.per_class]
        print(f"\n## {setting}: pool {len(prep['pool'])}, test {len(prep['test'])}, {C} classes, budgets {budgets}")
        print("setup seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in prep["times"].items()))
        res: dict[str, list[dict]] = {}
        for s in args.strategies:
            res[s] = [run_loop(prep, s, seed, budgets, args) for seed in args.seeds]
            sel = np.mean([np.sum(r["select_seconds"]) for r in res[s]])
            print(
                f"  {s:<10} final {100 * np.mean([r['accuracy'][-1] for r in res[s]]):.1f}%  selection {sel:.1f} s/run",
                flush=True,
            )
        md, wins = table(budgets, res)
        print(f"\nproxy test accuracy (%), mean±std over seeds {args.seeds}; * = best per budget\n")
        print(md)
        print("\nbudgets where each strategy is at least as good as the best other strategy:")
        for s, w in sorted(wins.items(), key=lambda kv: -len(kv[1])):
            print(f"  {s:<10} {len(w)}  {w}")
        print("\nselection seconds per run (all rounds), mean over seeds:")
        print(
            "  "
            + ", ".join(f"{s} {np.mean([np.sum(r['select_seconds']) for r in runs]):.1f}" for s, runs in res.items())
        )
        goals = []
        if "ntkcpl" in wins:
            most = max(len(w) for s, w in wins.items() if s != "ntkcpl")
            ok = len(wins["ntkcpl"]) > most
            goals.append(
                f"NTKCPL at least as good as the best other at more budgets than any other: {'MET' if ok else 'MISSED'} "
                f"(NTKCPL {len(wins['ntkcpl'])}, best other {most})"
            )
        if "pt4al" in res and "random" in res:
            d = 100 * (
                np.mean([r["accuracy"][0] for r in res["pt4al"]]) - np.mean([r["accuracy"][0] for r in res["random"]])
            )
            goals.append(
                f"PT4AL better than random at the smallest budget: {'MET' if d > 0 else 'MISSED'} ({d:+.1f} points)"
            )
        for g in goals:
            print("GOAL " + g)
        tag = f"_{args.arch}_{args.input_size or 'native'}px" if args.pretrained else ""
        png = args.out / f"selfsup_{setting}{tag}.png"
        plot(budgets, res, f"{setting}: {describe_encoder(args)} features, proxy MLP, {len(args.seeds)} seeds", png)
        print(f"plot: {png}  ({time.perf_counter() - t0:.0f} s for this setting)")
        report = {"budgets": budgets, "results": res, "wins": wins, "goals": goals, "times": prep["times"]}
        (args.out / f"selfsup_{setting}{tag}.json").write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
