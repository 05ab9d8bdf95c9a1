"""A competing PyTorch training process for bench/omp_wait/run.sh: default threads, runs SECONDS."""

import sys, time, torch, torchvision

m = torchvision.models.resnet18(num_classes=10)
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x = torch.randn(32, 3, 64, 64)
y = torch.randint(0, 10, (32,))
end = time.time() + float(sys.argv[1])
while time.time() < end:
    opt.zero_grad()
    torch.nn.functional.cross_entropy(m(x), y).backward()
    opt.step()
