"""Model registry: build a network by name (``create_model("compact_resnet", 10, 1)``).

Registered: ``compact_resnet`` (the CPU default for 28×28 grey images), ``resnet20`` (CIFAR),
``resnet18`` and ``mobilenet_v2`` (torchvision). Importing this package registers all of them.
"""

from smpq.models import compact_resnet as _compact_resnet  # noqa: F401  (registers on import)
from smpq.models import resnet20 as _resnet20  # noqa: F401
from smpq.models import torchvision_models as _torchvision_models  # noqa: F401
from smpq.models.compact_resnet import CompactResNet
from smpq.models.registry import create_model, list_models, load_pretrained, register_model
from smpq.models.resnet20 import CifarResNet

__all__ = ["CifarResNet", "CompactResNet", "create_model", "list_models", "load_pretrained", "register_model"]
