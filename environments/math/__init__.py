from environments.math.env import MathEnvironment

__all__ = ["MathEnvironment"]
