"""Feature-based transfer (基于特征的迁移): shallow alignment (CORAL, TCA, subspace alignment) and deep losses."""
from .deep import CORALLoss, FeatureExtractor, MKMMDLoss, MMDLoss
from .optimal_transport import OTMapping
from .shallow import CORAL, TCA, DAPipeline, SubspaceAlignment, make_da_pipeline

__all__ = ["CORAL", "TCA", "SubspaceAlignment", "DAPipeline", "make_da_pipeline",
           "FeatureExtractor", "MMDLoss", "MKMMDLoss", "CORALLoss"]
__all__ += ["OTMapping"]
