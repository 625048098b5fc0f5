"""AS3L against its baselines at 1, 2 and 4 labels per class, on self-supervised features.

The same encoder, pool and features as bench/selfsup.py (cached in its work folder): SimCLR on the
pool, or with ``--pretrained`` the ImageNet backbone. For every budget and seed, four ways to spend
the same labels, each trained from that encoder, and two linear baselines:

  (a) random labels + supervised fine-tuning (LP-FT)
  (b) random labels + FixMatch
  (c) AS3L: one-shot selection + priors + prior-guided FixMatch
  (d) AS3L one-shot selection + FixMatch without priors
  (e), (f) the obvious baseline: LogisticRegression on the frozen features (standardised) of the
      random ids of (a, b) and of AS3L's ids of (c, d)
  (g) (c) held to its linear probe as the library trains it (``train.holdout`` 0.2,
      :func:`alcore.semi.semi_guard`): AS3L again on each evidence fold, and the probe handed over
      unless AS3L beats it on the held-out labels; when AS3L wins, its network is (c)'s

plus two cheap read-outs of (c): the accuracy of the priors themselves on the pool (evaluation
only: the bench knows the truth, the method never reads it) and a proxy MLP trained on the priors
alone. The semi-supervised runs are tested after 1/3, 2/3 and all of their steps, which gives the
paper's "same accuracy in about 1/3 of the training time" as: (c) after 1/3 of its steps against
(b) after all of them. Wall seconds include the priors for (c) and the selection for (c), (d) and (f).

Usage::

    uv run python bench/as3l.py                       # fmnist and cifar, 3 seeds, 1/2/4 labels per class
    uv run python bench/as3l.py --settings fmnist --seeds 0 --steps 60
    uv run python bench/as3l.py --pretrained --arch efficientnet_lite0 --input-size 48 --feature-level 3 --settings fmnist
    uv run python bench/as3l.py --pretrained --arch efficientnet_lite0 --input-size 48 --settings cifar
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import selfsup  # noqa: E402  (the sibling bench: same options, same cached encoder)

METHODS = (
    "a_random_sup",
    "b_random_fixmatch",
    "c_as3l",
    "d_as3l_fixmatch",
    "e_random_lr",
    "f_as3l_lr",
    "g_as3l_guarded",
)


def one(prep: dict[str, Any], budget: int, seed: int, args: Any) -> dict[str, Any]:
    import shutil

    from alcore.as3l import train_on_priors
    from alcore.config import Params, TrainCfg
    from alcore.encoders import load_encoder
    from alcore.idtable import IdIndex
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs
    from alcore.seeding import derive_seed
    from alcore.semi import train_semi
    from alcore.steps import as3l_priors, train_network
    from alcore.training import evaluate
    from bench._baseline import logreg_accuracy

    data, pool, test = prep["data"], prep["pool"], prep["test"]
    work = prep["work"]
    enc = load_encoder(work / "encoder.safetensors")
    truth = np.asarray(data.pool.labels)
    pool_index = IdIndex(data.pool.ids)
    test_y = np.asarray(data.test.labels)[IdIndex(data.test.ids).positions(test.ids)]
    cfg = TrainCfg(
        ft_epochs=args.ft_epochs,
        semi_steps=args.steps,
        semi_batch_size=args.batch,
        semi_mu=args.mu,
        augment=args.augment,
        semi_head_init=args.head_init,
        semi_lr=args.lr,
    )
    rng = np.random.default_rng(derive_seed(seed, "random-labels", budget))
    out: dict[str, Any] = {}
    # AS3L's one-shot selection: round 1 of the learner with the as3l strategy, as the as3l flow runs it
    p = Params.model_validate(
        {
            "experiment": {"name": "bench-as3l", "seed": seed, "device": "cpu", "progress": False},
            "data": prep["data_cfg"].model_dump(),
            "al": {"strategy": "as3l", "initial": budget, "rounds": 1},
        }
    )
    inputs = RunInputs.from_files(
        p.data, pool=work / "pool.parquet", test=work / "test.parquet", encoder=work / "encoder.safetensors"
    )
    run_dir = work / "runs" / f"as3l-{budget}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    query = ActiveLearner.open(p, inputs, PlainSteps(), run_dir=run_dir).query(1, budget)
    as3l_ids, t_select = query.ids, query.seconds["scoring"]
    choices = {"random": rng.choice(np.asarray(data.pool.ids), size=budget, replace=False), "as3l": as3l_ids}
    every = max(1, args.steps // 3)

    def curve(_done: int, model: Any) -> dict[str, float]:
        return {"test_accuracy": evaluate(model, data.test, device="cpu")["accuracy"]}

    for method in args.methods:
        ids = choices["random" if method.startswith(("a_", "b_", "e_")) else "as3l"]
        pos = pool_index.positions(ids)
        labs = truth[pos]  # the oracle's answers for the chosen ids only
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"classes_covered": int(np.unique(labs).size)}
        if method in ("e_random_lr", "f_as3l_lr"):  # the obvious baseline: a linear model on the frozen features
            rows = pool.positions(ids)
            rec["accuracy"] = logreg_accuracy(pool.X[rows], labs, test.X, test_y)
        elif method == "g_as3l_guarded":  # the library's as3l mode, guard included (priors timed, as in c)
            priors = as3l_priors(enc, data, pos, labs, cfg, seed=seed, device="cpu")
            model = train_network(
                enc, data, ids, labs, cfg, mode="as3l", seed=seed, device="cpu", progress=False, priors=priors
            )
            ev = model.training_record
            rec.update(accuracy=evaluate(model, data.test, device="cpu")["accuracy"], chosen=ev["mode"])
            if "candidates" in ev:
                c = ev["candidates"]["as3l"]
                rec["evidence"] = f"{ev['held_out']} held out, +{c['wins']}/-{c['losses']} vs lp"
        elif method == "a_random_sup":
            model = train_network(enc, data, ids, labs, cfg, mode="lpft", seed=seed, device="cpu", progress=False)
            rec["accuracy"] = evaluate(model, data.test, device="cpu")["accuracy"]
        else:
            priors = None
            if method == "c_as3l":
                priors = as3l_priors(enc, data, pos, labs, cfg, seed=seed, device="cpu")
                rec["prior_accuracy_on_pool"] = float((priors.labels == truth).mean())
                tp = time.perf_counter()
                order = pool_index.positions(pool.ids)
                pr = type(priors)(labels=priors.labels[order], confidence=priors.confidence[order])
                clf = train_on_priors(pool.X, pr, data.n_classes, random_state=seed, device="cpu")
                rec["prior_baseline_accuracy"] = float((clf.predict(test.X) == test_y).mean())
                rec["prior_baseline_seconds"] = time.perf_counter() - tp
            res = train_semi(
                enc,
                data.pool,
                pos,
                labs,
                n_classes=data.n_classes,
                priors=None if priors is None else (priors.labels, priors.confidence),
                config=cfg.semi_config(),
                device="cpu",
                random_state=seed,
                progress=False,
                callback=curve,
                callback_every=every,
            )
            points = [h for h in res.history if "test_accuracy" in h]
            rec["curve"] = [(int(h["step"]), h["test_accuracy"]) for h in points]
            rec["accuracy"] = points[-1]["test_accuracy"]
        rec["seconds"] = time.perf_counter() - t0 - rec.get("prior_baseline_seconds", 0.0)
        if method.startswith(("c_", "d_", "f_", "g_")):
            rec["seconds"] += t_select
        out[method] = rec
    return out


def main() -> int:
    ap = selfsup.parser(__doc__)
    ap.set_defaults(per_class=[1, 2, 4])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--steps", type=int, default=150, help="semi-supervised optimiser steps")
    ap.add_argument("--batch", type=int, default=16, help="labeled images per step")
    ap.add_argument("--mu", type=int, default=2, help="unlabeled images per labeled one")
    ap.add_argument("--ft-epochs", type=int, default=15)
    ap.add_argument("--augment", default="crop")
    ap.add_argument("--head-init", default="random", choices=["random", "probe"], help="train.semi_head_init")
    ap.add_argument("--lr", type=float, default=0.03, help="train.semi_lr")
    args = ap.parse_args()
    for setting in args.settings:
        t_setting = time.perf_counter()
        prep = selfsup.prepare(setting, args)
        C = prep["data"].n_classes
        budgets = [k * C for k in args.per_class]
        print(
            f"\n## {setting}: pool {len(prep['pool'])}, test {len(prep['test'])}, budgets {budgets}, seeds {args.seeds}"
        )
        results: dict[int, list[dict[str, Any]]] = {b: [] for b in budgets}
        for b in budgets:
            for s in args.seeds:
                results[b].append(one(prep, b, s, args))
                done = ", ".join(
                    f"{m} {100 * r['accuracy']:.1f}% {r['seconds']:.0f}s" for m, r in results[b][-1].items()
                )
                print(f"  {b} labels, seed {s}: {done}", flush=True)
        head = "| labels | " + " | ".join(f"{m} acc % | {m} s" for m in args.methods) + " |"
        print("\n" + head + "\n|---:|" + "---:|---:|" * len(args.methods))
        for b in budgets:
            cells = []
            for m in args.methods:
                acc = 100 * np.array([r[m]["accuracy"] for r in results[b]])
                sec = np.array([r[m]["seconds"] for r in results[b]])
                cells.append(f"{acc.mean():.1f}±{acc.std():.1f} | {sec.mean():.0f}")
            print(f"| {b} | " + " | ".join(cells) + " |")
        if "g_as3l_guarded" in args.methods:
            print("\nthe guard (g): what it handed over, per seed")
            for b in budgets:
                got = "; ".join(
                    f"{r['g_as3l_guarded']['chosen']} ({r['g_as3l_guarded'].get('evidence', 'no fold')})"
                    for r in results[b]
                )
                print(f"  {b:>3} labels: {got}")
        if "c_as3l" in args.methods:
            print("\npriors (c): accuracy on the pool (evaluation only), and a proxy trained on them alone:")
            for b in budgets:
                pa = 100 * np.mean([r["c_as3l"]["prior_accuracy_on_pool"] for r in results[b]])
                pb = 100 * np.mean([r["c_as3l"]["prior_baseline_accuracy"] for r in results[b]])
                cov = {m: np.mean([r[m]["classes_covered"] for r in results[b]]) for m in args.methods}
                print(f"  {b:>3} labels: priors {pa:.1f}%, proxy on priors {pb:.1f}%; classes covered " + str(cov))
        if {"b_random_fixmatch", "c_as3l"} <= set(args.methods):
            print("\nlearning curves (test accuracy % after 1/3, 2/3, 3/3 of the steps), mean over seeds:")
            for b in budgets:
                for m in ("b_random_fixmatch", "c_as3l", "d_as3l_fixmatch"):
                    if m in args.methods:
                        pts = np.mean([[a for _, a in r[m]["curve"]] for r in results[b]], axis=0) * 100
                        print(f"  {b:>3} {m:<18} " + " -> ".join(f"{p:.1f}" for p in pts))
                c3 = np.mean([r["c_as3l"]["curve"][0][1] for r in results[b]])
                bf = np.mean([r["b_random_fixmatch"]["curve"][-1][1] for r in results[b]])
                print(
                    f"      AS3L after 1/3 of the steps vs FixMatch after all: {100 * c3:.1f} vs {100 * bf:.1f} "
                    f"({'reached' if c3 >= bf else 'not reached'})"
                )
        (args.out / f"as3l_{setting}.json").write_text(
            json.dumps({str(b): v for b, v in results.items()}, indent=1, default=float)
        )
        print(f"({time.perf_counter() - t_setting:.0f} s for this setting)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
