from environments.mcq.env import MultipleChoiceEnvironment

__all__ = ["MultipleChoiceEnvironment"]
