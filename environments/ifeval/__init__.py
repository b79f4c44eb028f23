from environments.ifeval.env import IFEvalEnvironment

__all__ = ["IFEvalEnvironment"]
