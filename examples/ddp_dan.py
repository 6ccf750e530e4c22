"""DAN or DANN on the shipped digits shift (8×8 digits → rotated 30°) with DistributedDataParallel.

    torchrun --nproc_per_node=2 --master_addr 127.0.0.1 --master_port 29512 examples/ddp_dan.py --method dan
    torchrun --nproc_per_node=1 ... (the single-process run: the same script, the same global batch)

gloo on CPU, NCCL when every rank has a GPU. Each domain has its own DistributedSampler; ``--batch-size`` is the
global batch of each domain, split evenly over the W ranks. DAN's MK-MMD is the loss of the global batch
(``tl.feature.MKMMDLoss(distributed=True)``, gradient scaled by W for DDP's mean); DANN's domain loss is a
per-sample mean, which DDP's mean over equal shards already makes global. Rank 0 alone writes ``--checkpoint``
(model, optimiser, step); a run given an existing checkpoint resumes from it. Lesson 17.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import tlkit as tl


class Network(nn.Module):
    """Features φ (64 → 64), a 10-way head and, for DANN, a domain discriminator behind gradient reversal."""

    def __init__(self, method: str):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)
        self.discriminator = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)) if method == "dann" else None

    def forward(self, x, reversal: float = 1.0):
        features = self.features(x)
        domain = None if self.discriminator is None else self.discriminator(tl.relational.grad_reverse(features,
                                                                                                         reversal))
        return features, self.head(features), domain


def loaders(batch_size: int, rank: int, world_size: int, seed: int):
    if batch_size % world_size:
        raise ValueError(f"--batch-size must be divisible by the number of processes {world_size}, got {batch_size}")
    data = tl.data.digits_shift("rotation", angle=30.0)
    result = []
    for x, y in ((data.Xs, data.ys), (data.Xt, data.yt)):
        dataset = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
        result.append((sampler, DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler,
                                           drop_last=True)))
    return result, data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("dan", "dann"), default="dan")
    parser.add_argument("--steps", type=int, default=300, help="total optimiser steps (a resumed run continues)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch per domain")
    parser.add_argument("--weight", type=float, default=1.0, help="weight λ of the adaptation loss")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--checkpoint", type=Path, default=Path("ddp_dan.pt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = Network(args.method).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    step = 0
    if args.checkpoint.exists():
        state = torch.load(args.checkpoint, map_location=device)
        if state["method"] != args.method:
            raise ValueError(f"--checkpoint {args.checkpoint} holds a {state['method']} run, not {args.method}")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        if rank == 0:
            print(f"resumed from {args.checkpoint} at step {step}", flush=True)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    ((source_sampler, source_loader), (target_sampler, target_loader)), data = loaders(args.batch_size, rank,
                                                                                        world_size, args.seed)
    mmd = tl.feature.MKMMDLoss(distributed=True)
    epoch = step // min(len(source_loader), len(target_loader))
    while step < args.steps:
        source_sampler.set_epoch(epoch)
        target_sampler.set_epoch(epoch)
        for (xs, ys), (xt, _) in zip(source_loader, target_loader):
            if step >= args.steps:
                break
            xs, ys, xt = xs.to(device), ys.to(device), xt.to(device)
            features, logits, domain = ddp(torch.cat([xs, xt]))
            n = xs.shape[0]
            classification = nn.functional.cross_entropy(logits[:n], ys)
            if args.method == "dan":
                adaptation = mmd(features[:n], features[n:])
            else:
                labels = torch.cat([torch.zeros(n), torch.ones(xt.shape[0])]).to(device)[:, None]
                adaptation = nn.functional.binary_cross_entropy_with_logits(domain, labels)
            loss = classification + args.weight * adaptation
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            step += 1
            if rank == 0 and (step % 50 == 0 or step == args.steps):
                print(f"step {step} loss {float(loss.detach()):.4f} adaptation {float(adaptation.detach()):.4f}", flush=True)
        epoch += 1
    if rank == 0:
        torch.save({"method": args.method, "model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step}, args.checkpoint)
        with torch.no_grad():
            _, logits, _ = model(torch.as_tensor(data.Xt).to(device))
        accuracy = float((logits.argmax(1).cpu() == torch.as_tensor(data.yt)).float().mean())
        print(f"world size {world_size}, step {step}, target accuracy {accuracy:.3f}, checkpoint {args.checkpoint}",
              flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
