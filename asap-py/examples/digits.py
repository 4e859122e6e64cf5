"""Trains a 1.1M-parameter MLP on scikit-learn's digits, data-parallel, with ASAP or with
torch DDP (gloo): the same script, the same seeds, one line apart. Launch with torchrun:

    torchrun --nproc-per-node 4 asap-py/examples/digits.py --engine asap
    torchrun --nproc-per-node 4 asap-py/examples/digits.py --engine ddp

`--slow-rank R --slow-factor F` makes worker R F times slower (it sleeps F-1 times its
own step time after each step), as a shared or older machine would be. Rank 0 prints one
JSON line: held-out accuracy over time, time to `--target`, final accuracy, bytes sent.
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser()
parser.add_argument("--engine", choices=["asap", "ddp"], default="asap")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--batch", type=int, default=32, help="per worker")
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--hidden", type=int, default=1024)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--target", type=float, default=0.95, help="held-out accuracy to time")
parser.add_argument("--slow-rank", type=int, default=-1)
parser.add_argument("--slow-factor", type=float, default=1.0)
parser.add_argument("--compress", default="none", help="asap: none, f16, q8, ...")
parser.add_argument("--topology", default="one-peer-exp", help="asap: the graph")
parser.add_argument("--every", type=int, default=1, help="asap: average every k steps")
parser.add_argument("--wait", default="all", help="asap: all, none, or a number k")
args = parser.parse_args()

torch.set_num_threads(1)
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

# The same split on every worker: 20% held out, the rest cut into `world` shards.
digits = load_digits()
x = (digits.data / 16.0).astype(np.float32)
y = digits.target.astype(np.int64)
order = np.random.default_rng(args.seed).permutation(len(x))
test, train = order[: len(x) // 5], order[len(x) // 5 :]
shard = train[rank::world]
x_train, y_train = torch.from_numpy(x[shard]), torch.from_numpy(y[shard])
x_test, y_test = torch.from_numpy(x[test]), torch.from_numpy(y[test])

torch.manual_seed(args.seed)  # the same initial weights everywhere
model = torch.nn.Sequential(
    torch.nn.Linear(64, args.hidden),
    torch.nn.ReLU(),
    torch.nn.Linear(args.hidden, args.hidden),
    torch.nn.ReLU(),
    torch.nn.Linear(args.hidden, 10),
)
parameters = sum(p.numel() for p in model.parameters())
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

if args.engine == "asap":
    import asap

    # The one line (it starts this process's member from torchrun's environment).
    optimizer = asap.DistributedOptimizer(
        optimizer, model, every=args.every, topology=args.topology, compress=args.compress, wait=args.wait
    )
    net = model
else:
    dist.init_process_group("gloo")
    net = torch.nn.parallel.DistributedDataParallel(model)


def accuracy() -> float:
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


steps_per_epoch = math.ceil(len(shard) / args.batch)
generator = torch.Generator().manual_seed(args.seed + rank)
curve = []
start = time.perf_counter()
for epoch in range(args.epochs):
    perm = torch.randperm(len(shard), generator=generator)
    for step in range(steps_per_epoch):
        t0 = time.perf_counter()
        idx = perm[step * args.batch : (step + 1) * args.batch]
        loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == args.slow_rank and args.slow_factor > 1:
            time.sleep((args.slow_factor - 1) * (time.perf_counter() - t0))
    curve.append((time.perf_counter() - start, accuracy()))

if args.engine == "asap":
    # Bring the replicas together before the final evaluation.
    optimizer.synchronize(rounds=2 * max(1, math.ceil(math.log2(world))))
    sent = asap.stats()["bytes_sent"]
    asap.shutdown()
else:
    # A ring all-reduce of the gradients a step: 2 (n - 1) / n of the model a worker.
    sent = int(2 * (world - 1) / world * 4 * parameters * steps_per_epoch * args.epochs)
    dist.destroy_process_group()
wall = time.perf_counter() - start
final = accuracy()
reached = next((t for t, a in curve if a >= args.target), None)
if rank == 0:
    print(
        json.dumps(
            {
                "engine": args.engine,
                "compress": args.compress,
                "wait": args.wait,
                "world": world,
                "parameters": parameters,
                "slow": [args.slow_rank, args.slow_factor] if args.slow_factor > 1 else None,
                "final_accuracy": final,
                "target": args.target,
                "time_to_target_s": reached,
                "wall_s": wall,
                "bytes_sent": sent,
                "curve": curve,
            }
        ),
        flush=True,
    )
