"""needle.models: reference models and the course's apps-level training loops (course API §8, docs/design.md)."""

from . import hw0, mlp_resnet, simple_ml  # noqa: F401
from .mlp_resnet import MLPResNet, ResidualBlock, epoch, train_mnist  # noqa: F401

# models written alongside the conv / sequence modules
from .resnet9 import ResNet9  # noqa: F401
from .language_model import LanguageModel  # noqa: F401
from .cnn import SmallCNN  # noqa: F401
