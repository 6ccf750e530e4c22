"""Feature-based transfer (基于特征的迁移): shallow alignment (CORAL, TCA, subspace alignment) and deep losses."""
from .deep import CORALLoss, FeatureExtractor, MKMMDLoss, MMDLoss
from .optimal_transport import OTMapping
from .shallow import CORAL, TCA, DAPipeline, SubspaceAlignment, make_da_pipeline
from .test_time import TENT, AdaBN, softmax_entropy

__all__ = ["CORAL", "TCA", "SubspaceAlignment", "DAPipeline", "make_da_pipeline",
           "FeatureExtractor", "MMDLoss", "MKMMDLoss", "CORALLoss"]
__all__ += ["OTMapping"]
__all__ += ["AdaBN", "TENT", "softmax_entropy"]  # test-time adaptation, used in lesson 14
