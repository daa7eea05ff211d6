"""Time SupCon training steps of ResNet-18 (CIFAR stem) on 28x28 grey views, as contrastkit builds it.

Usage (from the repository root): PYTHONPATH=src python benchmarks/resnet18_step.py BATCH REPEATS
(docs/results-fashion-mnist.md at commit 20697e7 ran it with 64 3 under OMP_NUM_THREADS=1).
"""

import sys
import time

import torch

from contrastkit.data import MultiViewAugment
from contrastkit.losses import supcon
from contrastkit.train.networks import DataShape, build_networks

b = int(sys.argv[1])
reps = int(sys.argv[2])
shape = DataShape(1, 28, 10, [0.286], [0.353], [str(i) for i in range(10)])
enc, head = build_networks(
    model="resnet18", norm="batch", method="supcon", shape=shape, proj_dim=128
)
enc = enc.to(memory_format=torch.channels_last)
net = torch.nn.Sequential(enc, head)
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
aug = MultiViewAugment("fashion-mnist", 2, shape.mean, shape.std)
g = torch.Generator().manual_seed(0)
imgs = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8)
y = torch.randint(0, 10, (b,))
times = []
for r in range(reps + 1):
    t0 = time.perf_counter()
    x = aug(imgs, g).flatten(0, 1).contiguous(memory_format=torch.channels_last)
    z = torch.nn.functional.normalize(net(x), dim=1).view(b, 2, -1)
    loss = supcon(z, y, 0.2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
    print(f"step {r}: {times[-1]:.2f} s", flush=True)
med = sorted(times[1:])[len(times[1:]) // 2]
print(
    f"resnet18 supcon batch {b}: median {med:.2f} s/step = {b / med:.1f} images/s -> {60000 / (b / med) / 60:.0f} min per 60k epoch; threads {torch.get_num_threads()}"
)
