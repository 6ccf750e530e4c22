"""Feature-based transfer (基于特征的迁移): shallow alignment (CORAL, TCA, subspace alignment) and deep losses."""
from .deep import CORALLoss, FeatureExtractor, MKMMDLoss, MMDLoss
from .shallow import CORAL, TCA, SubspaceAlignment

__all__ = ["CORAL", "TCA", "SubspaceAlignment", "FeatureExtractor", "MMDLoss", "MKMMDLoss", "CORALLoss"]
