"""ResNet9 for 32x32 RGB images (the course's hw4 model, 431,946 parameters)."""

from needle import nn

__all__ = ["ResNet9", "ConvBN"]


def ConvBN(in_channels, out_channels, kernel_size, stride, device=None, dtype="float32"):
    """``Conv -> BatchNorm2d -> ReLU`` on NCHW tensors."""
    return nn.Sequential(
        nn.Conv(in_channels, out_channels, kernel_size, stride=stride, device=device, dtype=dtype),
        nn.BatchNorm2d(out_channels, device=device, dtype=dtype),
        nn.ReLU(),
    )


class ResNet9(nn.Module):
    """``(N, 3, 32, 32) -> (N, 10)`` logits.

    Modules are created in execution order (it fixes the RNG stream the
    course goldens were drawn from); no ReLU follows the residual additions.
    """

    def __init__(self, device=None, dtype="float32"):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.model = nn.Sequential(
            ConvBN(3, 16, 7, 4, **kw),                      # 32 -> 8
            ConvBN(16, 32, 3, 2, **kw),                     # 8 -> 4
            nn.Residual(nn.Sequential(ConvBN(32, 32, 3, 1, **kw), ConvBN(32, 32, 3, 1, **kw))),
            ConvBN(32, 64, 3, 2, **kw),                     # 4 -> 2
            ConvBN(64, 128, 3, 2, **kw),                    # 2 -> 1
            nn.Residual(nn.Sequential(ConvBN(128, 128, 3, 1, **kw),
                                      ConvBN(128, 128, 3, 1, **kw))),
            nn.Flatten(),
            nn.Linear(128, 128, **kw),
            nn.ReLU(),
            nn.Linear(128, 10, **kw),
        )

    def forward(self, x):
        return self.model(x)
