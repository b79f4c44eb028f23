from environments.code.env import CodeEnvironment

__all__ = ["CodeEnvironment"]
