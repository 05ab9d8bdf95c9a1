"""One timed workload for bench/omp_wait/run.sh: THREADS MODEL BATCH SIZE REPEATS; prints median, min, max."""

import os, sys, time, statistics, torch, timm

threads = int(sys.argv[1])
name = sys.argv[2]
bs = int(sys.argv[3])
size = int(sys.argv[4])
n = int(sys.argv[5])
torch.set_num_threads(threads)
if name == "simple_cnn_train":
    import torch.nn as nn

    m = nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1600, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )
    opt = torch.optim.Adam(m.parameters())
    x = torch.randn(bs, 1, 28, 28)
    y = torch.randint(0, 10, (bs,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
else:
    m = timm.create_model(name, num_classes=1000).eval().to(memory_format=torch.channels_last)
    x = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode():
            m(x)


for _ in range(3):
    step()
t = []
for _ in range(n):
    s = time.perf_counter()
    step()
    t.append(time.perf_counter() - s)
print(
    f"{name} bs{bs} threads={threads} wait={os.environ.get('OMP_WAIT_POLICY', 'default')} median={statistics.median(t) * 1e3:.1f}ms min={min(t) * 1e3:.1f} max={max(t) * 1e3:.1f}"
)
