from environments.workplace.env import WorkplaceEnvironment

__all__ = ["WorkplaceEnvironment"]
