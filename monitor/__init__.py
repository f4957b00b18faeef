"""Online failure monitoring: FLOAT (optimal transport against expert demonstrations)."""

from monitor.float_detector import FloatDetector, ReferenceBank, ThresholdCalibrator, cosine_cost, sinkhorn

__all__ = ["FloatDetector", "ReferenceBank", "ThresholdCalibrator", "cosine_cost", "sinkhorn"]
