"""PyTorch models of Hoi2Anomaly Edge: the HOI encoder and the caption model."""

from h2a.export_tools.models.caption_model import CaptionModel
from h2a.export_tools.models.config import CaptionConfig, HOIConfig, ModelConfig, make_config
from h2a.export_tools.models.hoi_encoder import HOIEncoder, HOIOutput

__all__ = [
    "CaptionConfig",
    "CaptionModel",
    "HOIConfig",
    "HOIEncoder",
    "HOIOutput",
    "ModelConfig",
    "make_config",
]
