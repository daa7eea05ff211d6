"""Models: the encoder registry (small CNN, torchvision ResNets) and the projection head."""

from contrastkit.models import resnet, small_cnn
from contrastkit.models.head import ProjectionHead
from contrastkit.models.registry import MODELS, NORMS, create_model, model_names, register_model

__all__ = [
    "MODELS",
    "NORMS",
    "ProjectionHead",
    "create_model",
    "model_names",
    "register_model",
    "resnet",
    "small_cnn",
]
